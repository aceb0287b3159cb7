//! The read use case on its own: no HTTP server, no token, a stand-in
//! authorizer. What the query endpoints and push delivery build on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use altinn_events::authz::{Action, Authorizer, Caller, PdpError};
use altinn_events::config::{CosmosAuth, CosmosConfig};
use altinn_events::domain::{EventRecord, FeedId, Filters, PlatformApp};
use altinn_events::feeds::emulator::EmulatorAccount;
use altinn_events::feeds::{FeedStore, IdSource};
use altinn_events::read::{FeedQuery, FeedReader, Page, Paging, ReadError, ReadLimits, Start, Waiters};
use altinn_events::register::{PartyRef, PartyRegister, RegisterError};
use futures::future::BoxFuture;

use crate::helpers::event_record;

/// Permits events whose id ends in an even digit; counts its calls.
#[derive(Default)]
struct EvenIds {
    calls: AtomicUsize,
}

impl Authorizer for EvenIds {
    fn authorize<'a>(
        &'a self,
        _caller: Caller<'a>,
        _action: Action,
        events: &'a [&'a EventRecord],
    ) -> BoxFuture<'a, Result<Vec<bool>, PdpError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let decisions = events.iter().map(|e| e.id.ends_with(['0', '2', '4', '6', '8'])).collect();
        Box::pin(async move { Ok(decisions) })
    }
}

struct NoRegister;

impl PartyRegister for NoRegister {
    fn party_id<'a>(&'a self, _party: &'a PartyRef) -> BoxFuture<'a, Result<u64, RegisterError>> {
        Box::pin(async { Err(RegisterError::NotFound) })
    }

    fn person_party_uuids<'a>(
        &'a self,
        _ssns: &'a [String],
    ) -> BoxFuture<'a, Result<std::collections::HashMap<String, String>, RegisterError>> {
        Box::pin(async { Ok(Default::default()) })
    }
}

const RES: &str = "urn:altinn:resource:app_ttd_apps-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_pages_authorizes_and_long_polls_without_http() {
    let config = CosmosConfig {
        auth: Some(CosmosAuth::Emulator),
        provision: Some(true),
        segment_size: 4,
        ..CosmosConfig::default()
    };
    let feeds = FeedStore::connect(&config, Some(EmulatorAccount::new())).await.unwrap();
    for i in 0..10 {
        feeds
            .append(event_record("ttd/apps-test", &format!("e{i}"), RES, "/party/1", "t"), IdSource::Server)
            .await
            .unwrap();
    }
    let pdp = Arc::new(EvenIds::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let limits = ReadLimits { scan_budget_factor: 10 };
    let reader = Arc::new(FeedReader::new(
        feeds.clone(),
        pdp.clone(),
        Arc::new(NoRegister),
        limits,
        Arc::new(Waiters::new(4, 4)),
        shutdown,
    ));
    let app = PlatformApp { issuer: "ttd".into(), app: "apps-test".into() };
    let query = |start: Start, wait: u64| FeedQuery {
        feed: FeedId::Resource(RES.into()),
        filters: Filters::default(),
        paging: Paging { start, size: 3, wait: Duration::from_secs(wait) },
        caller: Some(Caller::App(&app)),
        action: Action::Read,
        holder: "test".into(),
        shared: false,
    };
    let ids = |page: &Page| page.events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();

    // A filled page of permitted events, next past the last one scanned.
    let page = reader.read(query(Start::Position(0), 0)).await.unwrap();
    assert_eq!(ids(&page), ["e0", "e2", "e4"]);
    // The second read (doubled while the authorizer denies) went past e4:
    // e5 is denied and done with; the next page starts at e6.
    assert_eq!(page.next, 6);
    let page = reader.read(query(Start::AfterEvent("e4".into()), 0)).await.unwrap();
    assert_eq!(ids(&page), ["e6", "e8"]);
    assert_eq!(page.next, 10);
    assert!(pdp.calls.load(Ordering::SeqCst) >= 2, "the authorizer decided every page");

    // Long-polling at the head: woken by the append (the poll is a minute).
    let waiting = {
        let reader = reader.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let q = FeedQuery {
                feed: FeedId::Resource(RES.into()),
                filters: Filters::default(),
                paging: Paging { start: Start::Position(10), size: 3, wait: Duration::from_secs(20) },
                caller: Some(Caller::App(&app)),
                action: Action::Read,
                holder: "test".into(),
                shared: false,
            };
            reader.read(q).await
        })
    };
    crate::helpers::until("the read is parked", || reader.waiters().parked() == 1).await;
    feeds.append(event_record("ttd/apps-test", "e10", RES, "/party/1", "t"), IdSource::Server).await.unwrap();
    let page = waiting.await.unwrap().unwrap();
    assert_eq!(ids(&page), ["e10"]);

    // Shutdown answers a parked read at once, with an empty page.
    let parked = {
        let reader = reader.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let q = FeedQuery {
                feed: FeedId::Resource(RES.into()),
                filters: Filters::default(),
                paging: Paging { start: Start::Position(11), size: 3, wait: Duration::from_secs(20) },
                caller: Some(Caller::App(&app)),
                action: Action::Read,
                holder: "test".into(),
                shared: false,
            };
            reader.read(q).await
        })
    };
    crate::helpers::until("the read is parked", || reader.waiters().parked() == 1).await;
    stop.send(true).unwrap();
    let page = parked.await.unwrap().unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.next, 11);
    assert!(matches!(
        reader.party(&altinn_events::domain::query::PartyParam::Unit("1".into())).await,
        Err(ReadError::UnknownParty)
    ));
}
