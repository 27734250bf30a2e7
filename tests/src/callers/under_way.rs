//! What one principal has under way: each request holds a place among its
//! principal's from authentication to its response's last byte, so that a
//! principal holding many long requests (follows, slow turns, slow
//! bodies) takes a bounded share of the server's connections.

use std::time::Duration;

use agentbox_host::server::auth::Callers;
use agentbox_host::server::bounds::Bounds;
use agentbox_host::server::sockets::WebSocketSettings;
use serde_json::json;

use super::{ADMIN, keys, open_follow, read_to_end, serve_with};

#[test]
fn a_principal_has_a_bounded_number_of_requests_under_way_and_others_are_not_held_by_it() {
    let (file, [backend, app, _]) = keys();
    let served = serve_with(
        Callers::new(Some(&file), None),
        WebSocketSettings::default(),
        Bounds {
            requests_per_principal: Some(2),
            ..Bounds::default()
        },
    );
    let session = served.start(&backend, "shop");
    let history = format!("/v1/sessions/{session}/history");

    // A follow is a request under way until its stream ends: two hold
    // every place the key has.
    let mut follows = [
        open_follow(&served, &backend, &session).unwrap(),
        open_follow(&served, &backend, &session).unwrap(),
    ];
    let (status, body, headers) =
        served.call("GET", &history, None, Some(&format!("Bearer {backend}")));
    assert_eq!(
        (status, &body["kind"]),
        (429, &json!("too-many-requests")),
        "{body}"
    );
    assert_eq!(headers["retry-after"], "1");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("2 requests under way"),
        "{body}"
    );

    // Another key, the admin and the open routes are not held by it.
    served.start(&app, "intake");
    let (status, _) = served.as_caller(ADMIN, "GET", &history, None);
    assert_eq!(status, 200);
    let (status, _, _) = served.call("GET", "/healthz", None, None);
    assert_eq!(status, 200);

    // Ending the session ends its follows, and their places come back.
    let (status, body) =
        served.as_caller(ADMIN, "DELETE", &format!("/v1/sessions/{session}"), None);
    assert_eq!(status, 200, "{body}");
    for follow in &mut follows {
        read_to_end(follow);
    }
    let answered = (0..500).find_map(|_| {
        std::thread::sleep(Duration::from_millis(10));
        let (status, _) = served.as_caller(&backend, "GET", &history, None);
        (status == 200).then_some(status)
    });
    assert_eq!(answered, Some(200), "ended requests give their places back");
}
