//! Runs each Markdown snippet (README, docs/) that is a whole program against a fresh, empty
//! database (the snippet migrates it itself), with `DATABASE_URL` pointing there as a user's
//! would.

#[path = "../../common/mod.rs"]
mod common;

#[test]
fn readme_programs_run() {
    assert!(
        !readme_snippets::MAINS.is_empty(),
        "README has no whole program to run"
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for (name, main) in readme_snippets::MAINS {
        let db = runtime.block_on(common::TestDb::empty());
        // The only test in this binary: nothing else reads the environment concurrently.
        std::env::set_var("DATABASE_URL", &db.url);
        let outcome = main();
        std::env::remove_var("DATABASE_URL");
        if let Err(e) = outcome {
            panic!("snippet {name} failed: {e}");
        }
        // It did its work on that database: the migrations it applied are recorded there.
        let applied =
            runtime.block_on(db.scalar("SELECT count(*) AS n FROM __diesel_schema_migrations"));
        assert!(applied >= 1, "snippet {name} applied no migration");
    }
}
