//! Kill loops in CI: 10 SIGKILLs of the sidecar at random moments of backups and 10 of the
//! restore init container at random moments of restores (see `tests/support/kill.rs`; the soak
//! bench runs 50 of each: `cargo bench -p medusa-tests --bench soak -- --trials 50`).

use medusa_tests::kill;

const TRIALS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_killed_at_random_moments_of_backups() {
    let f = kill::sidecar_loop(TRIALS).await.unwrap();
    println!("sidecar kill loop: {f:?}");
    assert_eq!(f.killed_mid_way + f.killed_after, TRIALS);
    assert!(f.killed_mid_way > 0, "no kill landed during a backup: {f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_init_killed_at_random_moments_of_restores() {
    let f = kill::restore_loop(TRIALS).await.unwrap();
    println!("restore kill loop: {f:?}");
    assert_eq!(f.completed, TRIALS);
    assert!(f.killed_mid_way > 0, "no kill landed during a restore: {f:?}");
    assert!(f.ranged_gets >= 3, "the multipart SSTable was fetched by ranges: {f:?}");
}
