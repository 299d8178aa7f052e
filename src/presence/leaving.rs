//! A connection's end: it leaves its room (the room closes with its last connection), and the
//! clients it held are announced gone — one leave each, one clock above the last it wrote,
//! written as its principal.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::engine::{lock, Engine};
use super::room::{leave, Room, RoomState};
use crate::y_protocols::apply::apply_clients;
use crate::y_protocols::AwarenessClientUpdate;

/// Removes a connection from its room (the room closes with its last one); returns the
/// clients it held, with the clock each leave is written at.
pub(super) fn release(engine: &Engine, room: &Arc<Room>, number: u64) -> Vec<(u64, u64)> {
    let mut rooms = lock(&engine.rooms);
    let mut state = room.lock();
    state.members.remove(&number);
    let mut leaves = Vec::new();
    let RoomState {
        claims, unsaved, ..
    } = &mut *state;
    claims.retain(|client, claim| {
        if claim.connection == number {
            // Its leave is written one clock above its last move: a move not saved yet is
            // superseded.
            unsaved.remove(client);
            leaves.push((*client, claim.clock.saturating_add(1)));
            false
        } else {
            true
        }
    });
    if state.members.is_empty() && rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room)) {
        rooms.remove(&room.name);
    }
    ::metrics::gauge!(crate::metrics::PRESENCE_ROOMS).set(rooms.len() as f64);
    ::metrics::gauge!(crate::metrics::PRESENCE_CONNECTIONS).decrement(1.0);
    leaves
}

pub(super) async fn write_leaves(
    engine: &Engine,
    room: &Room,
    connection_id: &str,
    principal: Option<&str>,
    leaves: Vec<(u64, u64)>,
) {
    if leaves.is_empty() || engine.stopping.load(Ordering::SeqCst) {
        // Stopping: the instance's shutdown removes every entry in one statement.
        return;
    }
    let clients: Vec<AwarenessClientUpdate> = leaves
        .iter()
        .map(|&(client, clock)| leave(client, clock))
        .collect();
    let outcomes = apply_clients(
        &*engine.store,
        &room.name,
        connection_id,
        principal,
        &clients,
    )
    .await;
    match outcomes {
        Ok(outcomes) => {
            let applied: Vec<AwarenessClientUpdate> = clients
                .into_iter()
                .zip(outcomes)
                .filter(|(_, outcome)| outcome.is_applied())
                .map(|(client, _)| client)
                .collect();
            room.lock().forward(applied);
        }
        Err(error) => {
            tracing::warn!(%error, connection = %connection_id, "presence: cannot write the leaves of a closed connection; they expire instead");
        }
    }
}
