//! The contract of [`CacheProvider`] for a Redis OSS or Valkey cache: a
//! create that ends `Done` with an endpoint, a second create that adopts
//! the first one's cache, users that are put until active and deleted, and
//! deletes that are `Done` once nothing is left and stay `Done`.
//!
//! What differs by backend is how long each takes: local processes are
//! done at once, ElastiCache reports `Working` first. So every case calls
//! again until `Done`, as the worker does. `provider_contract!(open)` takes
//! an `open()` returning `(Arc<provider>, backend, guard)`: the backend
//! gives the spec of a cache whose admin secret it has stored, and the
//! guard stops whatever the case started.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;

use broker_core::domain::CacheUser;
use broker_core::domain::credentials::{PASSWORD_LEN, generate_password};
use broker_core::ports::{CacheProvider, CacheSpec, Progress, ProviderError};

/// What a case needs from the backend under test besides the provider.
pub trait Backend: Send + Sync {
    /// The spec of a Redis OSS or Valkey cache for `instance_id`, its admin
    /// secret stored where the provider reads it.
    fn spec(&self, instance_id: &str) -> CacheSpec;
}

/// Generates one test per case of the cache provider contract over `$open()`.
#[macro_export]
macro_rules! provider_contract {
    ($open:path) => {
        $crate::provider_contract!(@cases $open;
            a_created_cache_is_done_and_has_an_endpoint,
            creating_again_adopts_the_cache_the_first_create_made,
            a_user_is_put_until_active_then_deleted_and_deleting_it_again_is_done,
            deleting_what_never_existed_is_done_at_once,
            a_deleted_cache_is_done_and_stays_done,
        );
    };
    (@cases $open:path; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (provider, backend, _guard) = $open().await;
                $crate::contract::provider::$case(provider, std::sync::Arc::new(backend)).await;
            }
        )*
    };
}

const INSTANCE: &str = "0c7f3b52-8a41-4d5e-9f2a-6b1e0d3c4a77";

/// Calls `step` until it is `Done`, failing after 60 s or on an error.
async fn until_done<F, Fut>(what: &str, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Progress, ProviderError>>,
{
    let started = Instant::now();
    loop {
        match step().await {
            Ok(Progress::Done) => return,
            Ok(Progress::Working { detail }) => {
                assert!(started.elapsed() < Duration::from_secs(60), "{what} never finished: {detail}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what} failed: {e}"),
        }
    }
}

async fn created(provider: &dyn CacheProvider, spec: &CacheSpec) {
    let first = provider.create(spec).await.expect("create");
    if first != Progress::Done {
        until_done("create", || provider.progress(&spec.cache_key)).await;
    }
}

fn user(name: &str) -> CacheUser {
    CacheUser {
        username: name.into(),
        passwords: vec![generate_password(PASSWORD_LEN)] as Vec<SecretString>,
        access_string: "~* &* +@all -@dangerous".into(),
    }
}

pub async fn a_created_cache_is_done_and_has_an_endpoint(
    provider: Arc<dyn CacheProvider>,
    backend: Arc<dyn Backend>,
) {
    created(&*provider, &backend.spec(INSTANCE)).await;
    assert_eq!(provider.progress(INSTANCE).await.unwrap(), Progress::Done, "and stays done");
    let endpoint = provider.endpoint(INSTANCE).await.expect("an endpoint");
    assert!(!endpoint.host.is_empty() && endpoint.port > 0, "{endpoint:?}");
}

pub async fn creating_again_adopts_the_cache_the_first_create_made(
    provider: Arc<dyn CacheProvider>,
    backend: Arc<dyn Backend>,
) {
    let spec = backend.spec(INSTANCE);
    created(&*provider, &spec).await;
    let first = provider.endpoint(INSTANCE).await.unwrap();
    created(&*provider, &spec).await;
    assert_eq!(provider.endpoint(INSTANCE).await.unwrap(), first, "the same cache, not a second one");
}

pub async fn a_user_is_put_until_active_then_deleted_and_deleting_it_again_is_done(
    provider: Arc<dyn CacheProvider>,
    backend: Arc<dyn Backend>,
) {
    created(&*provider, &backend.spec(INSTANCE)).await;
    let app = user("b-contract");
    if provider.put_user(INSTANCE, &app).await.expect("put_user") != Progress::Done {
        until_done("the new user", || provider.user_progress(INSTANCE, "b-contract")).await;
    }
    assert_eq!(provider.user_progress(INSTANCE, "b-contract").await.unwrap(), Progress::Done);
    until_done("delete_user", || provider.delete_user(INSTANCE, "b-contract")).await;
    assert_eq!(provider.delete_user(INSTANCE, "b-contract").await.unwrap(), Progress::Done, "again");
}

pub async fn deleting_what_never_existed_is_done_at_once(
    provider: Arc<dyn CacheProvider>,
    _backend: Arc<dyn Backend>,
) {
    assert_eq!(provider.delete(INSTANCE, None).await.unwrap(), Progress::Done);
    assert_eq!(provider.delete_user(INSTANCE, "b-contract").await.unwrap(), Progress::Done);
}

pub async fn a_deleted_cache_is_done_and_stays_done(
    provider: Arc<dyn CacheProvider>,
    backend: Arc<dyn Backend>,
) {
    created(&*provider, &backend.spec(INSTANCE)).await;
    until_done("delete", || provider.delete(INSTANCE, None)).await;
    assert_eq!(provider.delete(INSTANCE, None).await.unwrap(), Progress::Done, "and again");
    assert!(provider.endpoint(INSTANCE).await.is_err(), "a deleted cache has no endpoint");
}
