//! Where one incoming client goes, decided from the room's state alone: written, dropped (an
//! echo, a peer's timed-out leave, a client another local connection holds), or answered with
//! the leave its peers saw (the rejoin-after-leave remedy).

use super::room::RoomState;

/// What to do with one incoming client, decided from the room's state alone.
pub(super) enum Route {
    Write,
    Drop,
    /// A state at or below the clock of a leave the clients saw: the client rejoins with an
    /// old clock (the rejoin-after-leave race) and must hear that leave to re-announce itself.
    Remedy(u64),
}

/// Where `client_id`'s state (`present`) or leave at `clock`, arriving on local connection
/// `number` (written as `principal`), goes.
pub(super) fn route(
    state: &RoomState,
    (number, principal): (u64, Option<&str>),
    client_id: u64,
    clock: u64,
    present: bool,
) -> Route {
    let seen = state.view.seen(client_id);
    // Not newer than what the clients were told: an echo (every y-websocket client sends
    // back each change it accepts), or a timed-out peer's leave at its last clock.
    let echo = seen.is_some_and(|s| clock <= s.clock);
    if let Some(seen) = seen.filter(|s| echo && !s.present && present) {
        return Route::Remedy(seen.clock);
    }
    match state.claims.get(&client_id) {
        Some(claim) if claim.connection == number => Route::Write,
        Some(claim) => {
            // Held by another local connection: a newer update from the same
            // (authenticated) principal is that client reconnecting before its old
            // connection was noticed dead; anything else is dropped.
            let same_principal = principal.is_some()
                && state
                    .members
                    .get(&claim.connection)
                    .is_none_or(|m| m.principal.as_deref() == principal);
            if !echo && same_principal {
                Route::Write
            } else {
                Route::Drop
            }
        }
        None if echo => Route::Drop,
        // A leave for a client never shown here: nothing to remove.
        None if seen.is_none() && !present => Route::Drop,
        // Held by no local connection and newer than what the room was told: written. A
        // client shown present is live on another instance, or on a dead one it is
        // failing over from. Open mode (no principal) cannot tell that client from a
        // spoof, and does as y-protocols does, whose servers relay any newer clock from
        // any connection: the store's clock rule decides, so a client that reconnects to
        // another instance is relayed at once, not after its old instance's lease lapses.
        // With a principal, the store's ownership decides as well.
        None => Route::Write,
    }
}
