//! The Janus VideoRoom target's signaling, on canned Janus 1.1 answers: no Janus needed (CI
//! never installs it; the side-by-side runs are by hand, `benches/side-by-side.sh`).

use conclave_bench::janus::{create_room_body, parse_event, parse_events, parse_success_id};

#[test]
fn success_answers_give_their_id_and_errors_their_reason() {
    let created = r#"{"janus":"success","transaction":"t1","data":{"id":7783258490937719}}"#;
    assert_eq!(parse_success_id(created), Ok(7783258490937719));
    let refused =
        r#"{"janus":"error","transaction":"t2","error":{"code":458,"reason":"No such session 1"}}"#;
    let err = parse_success_id(refused).unwrap_err();
    assert!(
        err.contains("458") && err.contains("No such session"),
        "{err}"
    );
    assert!(parse_success_id("not json").is_err());
}

#[test]
fn a_long_poll_array_gives_each_event() {
    // `GET /janus/<session>?maxev=20`: an array; `joined` lists the feeds already publishing.
    let body = r#"[
      {"janus":"event","session_id":1,"transaction":"t3","sender":11,
       "plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"joined","room":1000,
         "description":"x","id":5957630446341966,"private_id":277486824,
         "publishers":[{"id":7210562687624896,"display":"sim-0","streams":[{"type":"audio","mindex":0,"mid":"0","codec":"opus"}]},
                       {"id":42,"display":"sim-1","streams":[]}]}}},
      {"janus":"webrtcup","session_id":1,"sender":11},
      {"janus":"event","session_id":1,"sender":11,
       "plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"event","room":1000,
         "publishers":[{"id":43,"display":"sim-2"}]}}}
    ]"#;
    let events = parse_events(body).unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].sender, Some(11));
    assert_eq!(events[0].videoroom.as_deref(), Some("joined"));
    assert_eq!(events[0].id, Some(5957630446341966));
    assert_eq!(events[0].publishers, vec![7210562687624896, 42]);
    assert_eq!(events[1].janus, "webrtcup");
    assert_eq!(events[1].videoroom, None);
    assert_eq!(events[2].publishers, vec![43]);
    // Only `joined` names our own feed: a feed id elsewhere is not ours.
    assert_eq!(events[2].id, None);
}

#[test]
fn a_single_event_and_its_jsep() {
    // A subscriber's `attached` with Janus's offer (maxev=1 answers with one object).
    let body = r#"{"janus":"event","session_id":1,"transaction":"t4","sender":12,
      "plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"attached","room":1000,
        "streams":[{"mindex":0,"mid":"0","type":"audio","feed_id":42,"feed_mid":"0","send":true,"ready":false}]}},
      "jsep":{"type":"offer","sdp":"v=0\r\n"}}"#;
    let events = parse_events(body).unwrap();
    assert_eq!(events.len(), 1);
    let jsep = events[0].jsep.as_ref().unwrap();
    assert_eq!(
        (jsep.kind.as_str(), jsep.sdp.as_str()),
        ("offer", "v=0\r\n")
    );
    assert_eq!(events[0].videoroom.as_deref(), Some("attached"));
    assert!(events[0].publishers.is_empty());
}

#[test]
fn plugin_errors_departures_and_hangups() {
    let error = serde_json::json!({"janus":"event","sender":12,"plugindata":{"plugin":"janus.plugin.videoroom",
        "data":{"videoroom":"event","error_code":428,"error":"No such feed (43)"}}});
    assert_eq!(
        parse_event(&error).error.as_deref(),
        Some("428: No such feed (43)")
    );
    let gone = serde_json::json!({"janus":"event","sender":11,"plugindata":{"plugin":"janus.plugin.videoroom",
        "data":{"videoroom":"event","room":1000,"unpublished":43}}});
    assert_eq!(parse_event(&gone).gone, Some(43));
    let left = serde_json::json!({"janus":"event","sender":11,"plugindata":{"plugin":"janus.plugin.videoroom",
        "data":{"videoroom":"event","room":1000,"leaving":44}}});
    assert_eq!(parse_event(&left).gone, Some(44));
    let hangup =
        serde_json::json!({"janus":"hangup","session_id":1,"sender":12,"reason":"DTLS alert"});
    let ev = parse_event(&hangup);
    assert_eq!(
        (ev.janus.as_str(), ev.reason.as_deref()),
        ("hangup", Some("DTLS alert"))
    );
    let keepalive = parse_events(r#"{"janus":"keepalive"}"#).unwrap();
    assert_eq!(keepalive[0].janus, "keepalive");
    assert_eq!(keepalive[0].error, None);
}

#[test]
fn rooms_are_created_for_the_workload() {
    let body = create_room_body(1000, 20);
    assert_eq!(body["request"], "create");
    assert_eq!(body["room"], 1000);
    // Janus's default is 3 publishers: a 20-person room must say so.
    assert_eq!(body["publishers"], 20);
    assert_eq!(
        (body["audiocodec"].as_str(), body["videocodec"].as_str()),
        (Some("opus"), Some("vp8"))
    );
    assert_eq!(body["bitrate"], 0);
}
