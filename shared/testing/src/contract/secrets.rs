//! The contract of [`SecretStore`]: a create that keeps the first value,
//! reads by stage and by version, the stage moves of a rotation as Secrets
//! Manager makes them, deletes that may repeat, and no value in a `Debug`.
//!
//! `secret_contract!(open)` in an adapter's tests, where `open()` is an
//! async fn returning `(store, guard)`. Scheduling a rotation is left to each
//! adapter's own tests: Secrets Manager needs a rotation function for it.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use broker_core::ports::{SecretError, SecretStore, Stage};

/// Generates one test per case of the secret store contract over `$open()`.
#[macro_export]
macro_rules! secret_contract {
    ($open:path) => {
        $crate::secret_contract!(@cases $open;
            creating_twice_returns_the_same_reference_and_keeps_the_first_value,
            a_new_secret_reads_at_current_and_at_no_other_stage,
            a_secret_that_never_existed_reads_nothing_and_deletes_fine,
            a_deleted_secret_reads_nothing_and_deletes_again_fine,
            a_rotation_moves_current_to_previous_and_clears_pending,
            putting_the_same_pending_version_twice_keeps_the_first_value,
            a_new_pending_version_takes_the_label_from_an_abandoned_one,
            promoting_the_current_version_again_changes_nothing,
            stage_moves_on_a_missing_secret_or_version_are_not_found,
            describe_names_the_secret_and_follows_its_versions_through_a_rotation,
            a_version_reads_by_its_id_whatever_its_stage,
            debug_prints_no_value,
        );
    };
    (@cases $open:path; $($case:ident,)*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (store, _guard) = $open().await;
                $crate::contract::secrets::$case(std::sync::Arc::new(store)).await;
            }
        )*
    };
}

fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_string())
}

async fn read(store: &dyn SecretStore, reference: &str, stage: Stage) -> Option<String> {
    let value = store.read(reference, stage).await.unwrap();
    value.map(|v| v.expose_secret().to_string())
}

const NAME: &str = "osb/instances/i-1/admin";

// Version ids as Secrets Manager takes them: 32 to 64 characters.
const TOKEN_1: &str = "rotation-0000-0000-0000-000000000001";
const TOKEN_2: &str = "rotation-0000-0000-0000-000000000002";
const TOKEN_3: &str = "rotation-0000-0000-0000-000000000003";
const TOKEN_9: &str = "rotation-0000-0000-0000-000000000009";

pub async fn creating_twice_returns_the_same_reference_and_keeps_the_first_value(
    store: Arc<dyn SecretStore>,
) {
    let first = store.create(NAME, &secret("first-password")).await.unwrap();
    let second = store.create(NAME, &secret("second-password")).await.unwrap();
    assert_eq!(second, first);
    assert_eq!(read(&*store, &first, Stage::Current).await.as_deref(), Some("first-password"));
    assert_eq!(store.describe(&first).await.unwrap().versions.len(), 1, "no second version");
}

pub async fn a_new_secret_reads_at_current_and_at_no_other_stage(store: Arc<dyn SecretStore>) {
    let r = store.create(NAME, &secret("current")).await.unwrap();
    assert_eq!(read(&*store, &r, Stage::Current).await.as_deref(), Some("current"));
    assert_eq!(read(&*store, &r, Stage::Pending).await, None);
    assert_eq!(read(&*store, &r, Stage::Previous).await, None);
}

pub async fn a_secret_that_never_existed_reads_nothing_and_deletes_fine(store: Arc<dyn SecretStore>) {
    store.create(NAME, &secret("pw")).await.unwrap();
    let never = store.reference_for("osb/instances/i-2/admin");
    assert_eq!(read(&*store, &never, Stage::Current).await, None);
    store.delete(&never).await.unwrap();
    assert_eq!(read(&*store, &store.reference_for(NAME), Stage::Current).await.as_deref(), Some("pw"));
}

pub async fn a_deleted_secret_reads_nothing_and_deletes_again_fine(store: Arc<dyn SecretStore>) {
    let r = store.create(NAME, &secret("pw")).await.unwrap();
    store.delete(&r).await.unwrap();
    assert_eq!(read(&*store, &r, Stage::Current).await, None);
    assert!(matches!(store.describe(&r).await, Err(SecretError::NotFound(_))));
    store.delete(&r).await.unwrap();
}

pub async fn a_rotation_moves_current_to_previous_and_clears_pending(store: Arc<dyn SecretStore>) {
    let r = store.create(NAME, &secret("one")).await.unwrap();

    store.put_pending(&r, TOKEN_2, &secret("two")).await.unwrap();
    assert_eq!(read(&*store, &r, Stage::Current).await.as_deref(), Some("one"));
    assert_eq!(read(&*store, &r, Stage::Pending).await.as_deref(), Some("two"));

    store.promote(&r, TOKEN_2).await.unwrap();
    assert_eq!(read(&*store, &r, Stage::Current).await.as_deref(), Some("two"));
    assert_eq!(read(&*store, &r, Stage::Previous).await.as_deref(), Some("one"));
    assert_eq!(read(&*store, &r, Stage::Pending).await, None);

    store.put_pending(&r, TOKEN_3, &secret("three")).await.unwrap();
    store.promote(&r, TOKEN_3).await.unwrap();
    assert_eq!(read(&*store, &r, Stage::Current).await.as_deref(), Some("three"));
    assert_eq!(read(&*store, &r, Stage::Previous).await.as_deref(), Some("two"));
}

pub async fn putting_the_same_pending_version_twice_keeps_the_first_value(store: Arc<dyn SecretStore>) {
    let r = store.create(NAME, &secret("one")).await.unwrap();
    store.put_pending(&r, TOKEN_2, &secret("two")).await.unwrap();
    store.put_pending(&r, TOKEN_2, &secret("other")).await.unwrap();
    assert_eq!(read(&*store, &r, Stage::Pending).await.as_deref(), Some("two"));
    assert_eq!(read(&*store, &r, Stage::Current).await.as_deref(), Some("one"));
}

pub async fn a_new_pending_version_takes_the_label_from_an_abandoned_one(store: Arc<dyn SecretStore>) {
    let r = store.create(NAME, &secret("one")).await.unwrap();
    store.put_pending(&r, TOKEN_2, &secret("two")).await.unwrap();
    store.put_pending(&r, TOKEN_3, &secret("three")).await.unwrap();
    assert_eq!(read(&*store, &r, Stage::Pending).await.as_deref(), Some("three"));
    assert_eq!(read(&*store, &r, Stage::Current).await.as_deref(), Some("one"));
    let info = store.describe(&r).await.unwrap();
    assert_eq!(info.version_at(Stage::Pending), Some(TOKEN_3));
    assert!(info.stages_of(TOKEN_2).is_none_or(|s| s.is_empty()), "{info:?}");
}

pub async fn promoting_the_current_version_again_changes_nothing(store: Arc<dyn SecretStore>) {
    let r = store.create(NAME, &secret("one")).await.unwrap();
    store.put_pending(&r, TOKEN_2, &secret("two")).await.unwrap();
    store.promote(&r, TOKEN_2).await.unwrap();
    store.promote(&r, TOKEN_2).await.unwrap();
    assert_eq!(read(&*store, &r, Stage::Current).await.as_deref(), Some("two"));
    assert_eq!(read(&*store, &r, Stage::Previous).await.as_deref(), Some("one"));
}

pub async fn stage_moves_on_a_missing_secret_or_version_are_not_found(store: Arc<dyn SecretStore>) {
    let missing = store.reference_for("osb/instances/missing/admin");
    let err = store.put_pending(&missing, TOKEN_2, &secret("two")).await.unwrap_err();
    assert!(matches!(err, SecretError::NotFound(_)), "{err}");
    let r = store.create(NAME, &secret("one")).await.unwrap();
    let err = store.promote(&r, TOKEN_9).await.unwrap_err();
    assert!(matches!(err, SecretError::NotFound(_)), "{err}");
    assert_eq!(read(&*store, &r, Stage::Current).await.as_deref(), Some("one"));
}

pub async fn describe_names_the_secret_and_follows_its_versions_through_a_rotation(
    store: Arc<dyn SecretStore>,
) {
    let r = store.create(NAME, &secret("old-password")).await.unwrap();
    let info = store.describe(&r).await.unwrap();
    assert_eq!(info.name, NAME);
    assert_eq!(info.rotation_days, None);
    let first = info.version_at(Stage::Current).expect("a current version").to_string();

    store.put_pending(&r, TOKEN_1, &secret("new-password")).await.unwrap();
    let info = store.describe(&r).await.unwrap();
    assert_eq!(info.stages_of(TOKEN_1), Some(&[Stage::Pending][..]));
    assert_eq!(info.stages_of(&first), Some(&[Stage::Current][..]));

    store.promote(&r, TOKEN_1).await.unwrap();
    let info = store.describe(&r).await.unwrap();
    assert_eq!(info.stages_of(TOKEN_1), Some(&[Stage::Current][..]));
    assert_eq!(info.stages_of(&first), Some(&[Stage::Previous][..]));

    let missing = store.reference_for("osb/instances/missing/admin");
    assert!(matches!(store.describe(&missing).await, Err(SecretError::NotFound(_))));
}

pub async fn a_version_reads_by_its_id_whatever_its_stage(store: Arc<dyn SecretStore>) {
    let r = store.create(NAME, &secret("old-password")).await.unwrap();
    store.put_pending(&r, TOKEN_1, &secret("new-password")).await.unwrap();
    let pending = store.read_version(&r, TOKEN_1).await.unwrap().expect("the pending version");
    assert_eq!(pending.expose_secret(), "new-password");
    store.promote(&r, TOKEN_1).await.unwrap();
    let current = store.read_version(&r, TOKEN_1).await.unwrap().expect("now the current version");
    assert_eq!(current.expose_secret(), "new-password");
    assert!(store.read_version(&r, TOKEN_2).await.unwrap().is_none());
}

pub async fn debug_prints_no_value(store: Arc<dyn SecretStore>) {
    let r = store.create(NAME, &secret("hunter2hunter2")).await.unwrap();
    let value = store.read(&r, Stage::Current).await.unwrap().unwrap();
    assert!(!format!("{value:?}").contains("hunter2"));
    let info = store.describe(&r).await.unwrap();
    assert!(!format!("{info:?}").contains("hunter2"));
}
