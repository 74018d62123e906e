//! The contract every `CheckpointStore` passes (run against the files in
//! `files`' tests and against a private PostgreSQL in the suite's
//! `checkpoint_store` tests).

use super::CheckpointStore;

/// Panics at the first broken promise. `store` must be empty.
pub async fn run(store: &dyn CheckpointStore) {
    assert_eq!(
        store.list().await.unwrap(),
        Vec::<u64>::new(),
        "a new store is empty"
    );
    assert_eq!(store.load(5).await.unwrap(), None, "a missing checkpoint is None");
    // Saved whole, listed oldest first, loaded byte for byte.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    store.save(10, b"ten".to_vec(), 3).await.unwrap();
    store.save(30, big.clone(), 3).await.unwrap();
    store.save(20, b"twenty".to_vec(), 3).await.unwrap();
    assert_eq!(store.list().await.unwrap(), vec![10, 20, 30]);
    assert_eq!(store.load(10).await.unwrap().as_deref(), Some(&b"ten"[..]));
    assert_eq!(store.load(30).await.unwrap(), Some(big));
    // Only the newest `keep` stay.
    store.save(40, b"forty".to_vec(), 2).await.unwrap();
    assert_eq!(store.list().await.unwrap(), vec![30, 40]);
    assert_eq!(store.load(10).await.unwrap(), None);
    assert_eq!(store.load(20).await.unwrap(), None);
    // Saving at a seq again replaces it.
    store.save(40, b"forty again".to_vec(), 2).await.unwrap();
    assert_eq!(
        store.load(40).await.unwrap().as_deref(),
        Some(&b"forty again"[..])
    );
    assert_eq!(store.list().await.unwrap(), vec![30, 40]);
    // keep 0 counts as 1: the newest is never removed.
    store.save(50, b"fifty".to_vec(), 0).await.unwrap();
    assert_eq!(store.list().await.unwrap(), vec![50]);
    assert_eq!(store.load(50).await.unwrap().as_deref(), Some(&b"fifty"[..]));
    // An empty checkpoint is stored as empty (decode refuses it later).
    store.save(60, Vec::new(), 5).await.unwrap();
    assert_eq!(store.load(60).await.unwrap(), Some(Vec::new()));
    assert!(!store.place().is_empty());
}
