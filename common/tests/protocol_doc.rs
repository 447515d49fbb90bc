//! Keeps `docs/protocol.md` and the wire types in sync.
//!
//! Every ```` ```json ```` block of the page must hold one JSON object. Blocks with an `id` field
//! must parse as a `ClientMessage` or a `ServerMessage`, blocks with a `type` field as a
//! `MediaCommand` or a `MediaEvent`. "Parses" is strict: serde must accept the example and every
//! field of the example must come back, with the same value, when the parsed message is
//! serialized again (so a misspelt optional field, which serde would silently skip, fails).
//! Every message of the four enums needs at least one example, and every error code must be in
//! the page's error code table.

use std::collections::BTreeSet;

use conclave_common::link::{MediaCommand, MediaEvent};
use conclave_common::protocol::{ClientMessage, ErrorCode, ServerMessage, PROTOCOL_VERSION};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The ```` ```json ```` blocks of `text`, with the line number of their opening fence.
fn json_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim();
        match &mut current {
            None if fence == "```json" => current = Some((i + 1, String::new())),
            None => {}
            Some(_) if fence == "```" => blocks.extend(current.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(current.is_none(), "unterminated ```json block");
    blocks
}

/// Every field of `doc` is in `serialized` with the same value (objects compared the same way,
/// recursively). Fields the doc leaves out are allowed: they may have defaults.
fn fields_survive(doc: &Value, serialized: &Value, path: &str) -> Result<(), String> {
    match (doc, serialized) {
        (Value::Object(d), Value::Object(s)) => {
            for (key, value) in d {
                let at = format!("{path}.{key}");
                let Some(back) = s.get(key) else {
                    return Err(format!("unknown field {at}"));
                };
                fields_survive(value, back, &at)?;
            }
            Ok(())
        }
        (Value::Array(d), Value::Array(s)) if d.len() == s.len() => d
            .iter()
            .zip(s)
            .enumerate()
            .try_for_each(|(i, (d, s))| fields_survive(d, s, &format!("{path}[{i}]"))),
        _ if doc == serialized => Ok(()),
        _ => Err(format!("{path}: {doc} comes back as {serialized}")),
    }
}

/// `value` as a `T`, strictly (see the module doc).
fn parse_strict<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, String> {
    let parsed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&parsed).map_err(|e| e.to_string())?;
    fields_survive(value, &back, "")?;
    Ok(parsed)
}

// The wire name of each variant (browser messages: their own `id()`, an exhaustive match in
// protocol.rs). Exhaustive matches: adding a variant breaks the build, so the expected lists
// below cannot silently fall behind the types.

fn command_type(c: &MediaCommand) -> &'static str {
    match c {
        MediaCommand::AddPeer { .. } => "addPeer",
        MediaCommand::Answer { .. } => "answer",
        MediaCommand::Candidate { .. } => "candidate",
        MediaCommand::SetTrackViews { .. } => "setTrackViews",
        MediaCommand::RemovePeer { .. } => "removePeer",
        MediaCommand::AdoptPeer { .. } => "adoptPeer",
    }
}

fn event_type(e: &MediaEvent) -> &'static str {
    match e {
        MediaEvent::Hello { .. } => "hello",
        MediaEvent::Answer { .. } => "answer",
        MediaEvent::Offer { .. } => "offer",
        MediaEvent::PeerState { .. } => "peerState",
        MediaEvent::PeerError { .. } => "peerError",
        MediaEvent::Speaking { .. } => "speaking",
        MediaEvent::PublishLayers { .. } => "publishLayers",
    }
}

const CLIENT_IDS: &[&str] = &[
    "join",
    "offer",
    "answer",
    "iceCandidate",
    "setAudio",
    "setVideo",
    "setDeafened",
    "setSources",
    "setTrackViews",
    "leave",
    "heartbeat",
    "resume",
];
const SERVER_IDS: &[&str] = &[
    "joined",
    "answer",
    "serverOffer",
    "participantJoined",
    "participantLeft",
    "participantState",
    "mediaState",
    "speaking",
    "publishLayers",
    "left",
    "error",
    "heartbeat",
];
const COMMAND_TYPES: &[&str] = &[
    "addPeer",
    "answer",
    "candidate",
    "setTrackViews",
    "removePeer",
    "adoptPeer",
];
const EVENT_TYPES: &[&str] = &[
    "hello",
    "answer",
    "offer",
    "peerState",
    "peerError",
    "speaking",
    "publishLayers",
];

fn all_error_codes() -> Vec<ErrorCode> {
    let codes = vec![
        ErrorCode::BadMessage,
        ErrorCode::UnknownMessage,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::RoomFull,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::InvalidSdp,
        ErrorCode::InvalidState,
        ErrorCode::NoCapacity,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::ResumeFailed,
        ErrorCode::SdpTooLarge,
        ErrorCode::TooManyMLines,
        ErrorCode::TooManyTracks,
        ErrorCode::TooManyCandidates,
    ];
    // Exhaustive: a new code breaks the build until it is listed above.
    for code in &codes {
        match code {
            ErrorCode::BadMessage
            | ErrorCode::UnknownMessage
            | ErrorCode::InvalidToken
            | ErrorCode::TokenExpired
            | ErrorCode::RoomFull
            | ErrorCode::NotJoined
            | ErrorCode::AlreadyJoined
            | ErrorCode::InvalidSdp
            | ErrorCode::InvalidState
            | ErrorCode::NoCapacity
            | ErrorCode::Unavailable
            | ErrorCode::Internal
            | ErrorCode::ResumeFailed
            | ErrorCode::SdpTooLarge
            | ErrorCode::TooManyMLines
            | ErrorCode::TooManyTracks
            | ErrorCode::TooManyCandidates => {}
        }
    }
    codes
}

#[derive(Default)]
struct Covered {
    client: BTreeSet<&'static str>,
    server: BTreeSet<&'static str>,
    command: BTreeSet<&'static str>,
    event: BTreeSet<&'static str>,
}

/// Parse every example; panic listing every bad one.
fn check_examples(text: &str) -> Covered {
    let blocks = json_blocks(text);
    assert!(!blocks.is_empty(), "no ```json blocks in docs/protocol.md");
    let mut covered = Covered::default();
    let mut failures = Vec::new();
    for (line, body) in &blocks {
        let value: Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("line {line}: not one JSON value: {e}"));
                continue;
            }
        };
        if !value.is_object() {
            failures.push(format!("line {line}: not a JSON object"));
            continue;
        }
        if value.get("id").is_some() {
            let client = parse_strict::<ClientMessage>(&value);
            let server = parse_strict::<ServerMessage>(&value);
            if let Ok(m) = &client {
                covered.client.insert(m.id());
            }
            if let Ok(m) = &server {
                covered.server.insert(m.id());
                if let ServerMessage::Joined {
                    protocol_version, ..
                } = m
                {
                    if *protocol_version != PROTOCOL_VERSION {
                        failures.push(format!(
                            "line {line}: joined example has protocolVersion {protocol_version}, \
                             PROTOCOL_VERSION is {PROTOCOL_VERSION}"
                        ));
                    }
                }
            }
            if let (Err(c), Err(s)) = (client, server) {
                failures.push(format!(
                    "line {line}: neither a ClientMessage ({c}) nor a ServerMessage ({s})"
                ));
            }
        } else if value.get("type").is_some() {
            let command = parse_strict::<MediaCommand>(&value);
            let event = parse_strict::<MediaEvent>(&value);
            if let Ok(c) = &command {
                covered.command.insert(command_type(c));
            }
            if let Ok(e) = &event {
                covered.event.insert(event_type(e));
            }
            if let (Err(c), Err(e)) = (command, event) {
                failures.push(format!(
                    "line {line}: neither a MediaCommand ({c}) nor a MediaEvent ({e})"
                ));
            }
        }
        // Other objects (token claims, HTTP responses) only need to be valid JSON objects.
    }
    assert!(
        failures.is_empty(),
        "bad examples in docs/protocol.md:\n{}",
        failures.join("\n")
    );
    covered
}

fn missing(expected: &[&str], covered: &BTreeSet<&str>) -> Vec<String> {
    expected
        .iter()
        .filter(|name| !covered.contains(*name))
        .map(|name| name.to_string())
        .collect()
}

#[test]
fn every_example_parses_as_its_message() {
    check_examples(&doc());
}

#[test]
fn every_message_has_an_example() {
    let covered = check_examples(&doc());
    let gaps = [
        ("client message ids", missing(CLIENT_IDS, &covered.client)),
        ("server message ids", missing(SERVER_IDS, &covered.server)),
        (
            "link command types",
            missing(COMMAND_TYPES, &covered.command),
        ),
        ("link event types", missing(EVENT_TYPES, &covered.event)),
    ];
    let report: Vec<String> = gaps
        .iter()
        .filter(|(_, m)| !m.is_empty())
        .map(|(what, m)| format!("{what} without an example: {}", m.join(", ")))
        .collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
    // And nothing covered that the lists do not know (they match the enums' wire names).
    assert_eq!(covered.client.len(), CLIENT_IDS.len());
    assert_eq!(covered.server.len(), SERVER_IDS.len());
    assert_eq!(covered.command.len(), COMMAND_TYPES.len());
    assert_eq!(covered.event.len(), EVENT_TYPES.len());
}

#[test]
fn every_error_code_is_in_the_table() {
    let text = doc();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("| `"))
        .collect();
    let missing: Vec<&str> = all_error_codes()
        .into_iter()
        .map(ErrorCode::as_str)
        .filter(|code| {
            let cell = format!("| `{code}` |");
            !rows.iter().any(|row| row.trim_start().starts_with(&cell))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "error codes missing from the error code table of docs/protocol.md: {}",
        missing.join(", ")
    );
}

#[test]
fn strict_parsing_catches_misspelt_fields() {
    // `sdpMlineIndex` (lower-case l) would be skipped by serde; the strict check refuses it.
    let v: Value = serde_json::from_str(
        r#"{"id":"iceCandidate","candidate":"candidate:1 1 udp 1 10.0.0.1 1 typ host","sdpMlineIndex":0}"#,
    )
    .unwrap();
    assert!(serde_json::from_value::<ClientMessage>(v.clone()).is_ok());
    assert!(parse_strict::<ClientMessage>(&v).is_err());
    // A server heartbeat is not a client heartbeat with an extra field.
    let v: Value = serde_json::from_str(r#"{"id":"heartbeat","serverTimeMs":1}"#).unwrap();
    assert!(parse_strict::<ClientMessage>(&v).is_err());
    assert!(parse_strict::<ServerMessage>(&v).is_ok());
}
