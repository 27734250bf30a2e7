//! The profile plugin: a caller remembered across conversations, host
//! restarts and session expiry, on the durable stores.

use std::sync::Arc;
use std::time::Duration;

use agentbox_host::store::{Namespace, Store};
use agentbox_host::{Clock, Host, Limits};
use serde_json::{Value, json};

use crate::harness::{durable_stores, every_store, host_with_clock, load, said, send, start_for};
use crate::plugins::PROFILE;

fn profile_host(store: Arc<dyn Store>, limits: Limits, clock: Clock) -> Host {
    let host = host_with_clock(limits, store, clock);
    load(&host, PROFILE);
    host
}

async fn call(host: &Host, user: Option<&str>) -> (String, String) {
    let report = start_for(host, "profile", user).await;
    (report.session.clone(), said(&report))
}

/// The profile stored for `user`, as JSON.
fn stored_profile(store: &dyn Store, user: &str) -> Option<Value> {
    let ns = Namespace {
        owner: "profile".into(),
        scope: format!("user/{user}"),
    };
    store
        .kv_get(&ns, "profile", u64::MAX)
        .unwrap()
        .map(|bytes| serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_is_remembered_across_sessions_and_host_restarts() {
    for store in durable_stores() {
        {
            let host = profile_host(store.store.clone(), Limits::default(), Clock::system());
            let (id, greeting) = call(&host, Some("ada")).await;
            assert_eq!(greeting, "Hello! What's your name?", "{}", store.name);
            assert_eq!(
                said(&send(&host, &id, "my name is ada").await),
                "Nice to meet you, Ada."
            );
            host.end_session(&id).await.unwrap();
        }
        // A new host on the same store, as after a restart.
        let reopened = store.spec.open().unwrap();
        let host = profile_host(reopened.clone(), Limits::default(), Clock::system());
        let (id, greeting) = call(&host, Some("ada")).await;
        assert_eq!(
            greeting, "Welcome back, Ada! This is call number 2.",
            "{}",
            store.name
        );
        send(&host, &id, "bye").await;
        let (_, greeting) = call(&host, Some("ada")).await;
        assert_eq!(
            greeting, "Welcome back, Ada! This is call number 3.",
            "{}",
            store.name
        );
        assert_eq!(
            stored_profile(&*reopened, "ada"),
            Some(
                json!({ "name": "Ada", "calls": 2, "last_interaction": "bye (EndReason::Agent)" })
            ),
            "{}",
            store.name
        );
        let (_, greeting) = call(&host, Some("alan")).await;
        assert_eq!(greeting, "Hello! What's your name?", "{}", store.name);
    }
}

/// Voice agents key a caller by phone number, chat agents by e-mail
/// address: both are user ids as they are, kept apart on every store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_number_and_an_e_mail_address_are_user_ids_on_every_store() {
    for store in every_store() {
        let host = profile_host(store.store.clone(), Limits::default(), Clock::system());
        for (user, name) in [
            ("+15551234567", "ada"),
            ("grace.hopper+cobol@example.com", "grace"),
        ] {
            let (id, _) = call(&host, Some(user)).await;
            send(&host, &id, &format!("my name is {name}")).await;
            host.end_session(&id).await.unwrap();
        }
        for (user, greeting) in [
            ("+15551234567", "Welcome back, Ada!"),
            ("grace.hopper+cobol@example.com", "Welcome back, Grace!"),
        ] {
            let (_, said) = call(&host, Some(user)).await;
            assert!(said.starts_with(greeting), "{}: {said}", store.name);
            assert_eq!(
                stored_profile(&*store.store, user).unwrap()["name"],
                json!(greeting[14..greeting.len() - 1]),
                "{}",
                store.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_caller_is_greeted_and_nothing_is_stored() {
    let store = every_store().remove(0);
    let host = profile_host(store.store.clone(), Limits::default(), Clock::system());
    let (id, greeting) = call(&host, None).await;
    assert!(
        greeting.starts_with("Hello! I can't remember"),
        "{greeting}"
    );
    send(&host, &id, "my name is grace").await;
    host.end_session(&id).await.unwrap();
    assert_eq!(store.store.kv_usage("profile").unwrap().keys, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_expires_runs_on_end_and_is_deleted() {
    for store in every_store() {
        let clock = Clock::manual(1_000_000);
        let limits = Limits {
            session_idle_ttl: Duration::from_secs(30 * 60),
            ..Limits::default()
        };
        let host = profile_host(store.store.clone(), limits, clock.clone());
        let (idle, _) = call(&host, Some("ada")).await;
        send(&host, &idle, "my name is ada").await;
        let (touched, _) = call(&host, Some("alan")).await;

        clock.advance(Duration::from_secs(29 * 60));
        send(&host, &touched, "still here").await;
        assert!(
            host.reap(100).await.unwrap().ended.is_empty(),
            "{}",
            store.name
        );

        clock.advance(Duration::from_secs(60));
        let reaped = host.reap(100).await.unwrap();
        assert_eq!(reaped.ended, std::slice::from_ref(&idle), "{}", store.name);
        assert_eq!(reaped.on_end_failures, 0);
        // on-end ran (its KV write is there), then the session went.
        assert_eq!(
            stored_profile(&*store.store, "ada"),
            Some(
                json!({ "name": "Ada", "calls": 1, "last_interaction": "my name is ada (EndReason::Expired)" })
            ),
            "{}",
            store.name
        );
        assert_eq!(store.store.load(&idle).unwrap(), None, "{}", store.name);
        assert!(
            store.store.history(&idle, 10).unwrap().is_empty(),
            "{}",
            store.name
        );
        let err = host.send_message(&idle, "hello?", None).await.unwrap_err();
        assert_eq!(err.cause.kind(), "not-found", "{}", store.name);

        // The touched session lives on, and answers.
        assert_eq!(said(&send(&host, &touched, "and now?").await), "Noted.");
        assert!(
            store.store.load(&touched).unwrap().is_some(),
            "{}",
            store.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_session_expires_at_its_maximum_lifetime() {
    let store = every_store().remove(0);
    let clock = Clock::manual(1_000_000);
    let limits = Limits {
        session_idle_ttl: Duration::from_secs(30 * 60),
        session_max_lifetime: Duration::from_secs(2 * 60 * 60),
        ..Limits::default()
    };
    let host = profile_host(store.store.clone(), limits, clock.clone());
    let (id, _) = call(&host, Some("ada")).await;
    for _ in 0..7 {
        clock.advance(Duration::from_secs(15 * 60));
        send(&host, &id, "still talking").await;
        assert!(host.reap(100).await.unwrap().ended.is_empty());
    }
    clock.advance(Duration::from_secs(15 * 60));
    assert_eq!(
        host.reap(100).await.unwrap().ended,
        std::slice::from_ref(&id)
    );
    assert_eq!(
        stored_profile(&*store.store, "ada").unwrap()["calls"],
        json!(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forecast_is_looked_up_once_per_ten_minutes() {
    for store in every_store() {
        let clock = Clock::manual(1_000_000);
        let host = profile_host(store.store.clone(), Limits::default(), clock.clone());
        let (id, _) = call(&host, None).await;
        let forecast = |city: &str| {
            let host = host.clone();
            let id = id.clone();
            let city = city.to_owned();
            async move {
                host.call_tool(&id, "forecast", json!({ "city": city }), None)
                    .await
                    .unwrap()
                    .result
            }
        };
        let lookups = || {
            let ns = Namespace {
                owner: "profile".into(),
                scope: "global".into(),
            };
            store.store.kv_get(&ns, "lookups", clock.now_ms()).unwrap()
        };
        assert_eq!(forecast("Paris").await, json!("Paris: sunny, 20°C"));
        assert_eq!(forecast("paris").await, json!("Paris: sunny, 20°C"));
        assert_eq!(lookups().as_deref(), Some(&b"1"[..]), "{}", store.name);
        clock.advance(Duration::from_secs(10 * 60));
        forecast("Paris").await;
        assert_eq!(lookups().as_deref(), Some(&b"2"[..]), "{}", store.name);
    }
}
