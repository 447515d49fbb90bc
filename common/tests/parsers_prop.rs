//! Property tests of the parsers that read network input: the client-message parser (every
//! browser frame goes through `parse_client_message`), the internal link's parsers
//! (`MediaCommand` on the media node, `MediaEvent` on the signaling node, both serde JSON)
//! and the SDP caps' cheap scan (`count_m_lines`, `ParticipantCaps::check_offer`).
//!
//! Each property runs a bounded number of cases (see `config`): no panic on arbitrary text,
//! bytes or JSON-shaped values; valid messages survive a round trip unchanged; the m-line
//! count agrees with how the SDP was built.

use conclave_common::caps::{count_m_lines, CapExceeded, ParticipantCaps};
use conclave_common::link::{MediaCommand, MediaEvent};
use conclave_common::protocol::{
    parse_client_message, ClientMessage, ErrorCode, MediaConnectionState, TrackInfo, TrackKind,
    TrackSource, TrackView,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // A failing case is shrunk, but not for ever.
        max_shrink_iters: 2_000,
        // The minimal failing input is printed; no regression file is written into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// How many of [`IDS`] are client message ids (they come first).
const CLIENT_IDS: usize = 11;

/// Message ids and field names of both protocols, so that generated objects often look
/// almost right (the interesting inputs), plus some that mean nothing.
const IDS: &[&str] = &[
    "join",
    "offer",
    "answer",
    "iceCandidate",
    "setAudio",
    "setVideo",
    "setDeafened",
    "setSources",
    "leave",
    "heartbeat",
    "resume",
    "addPeer",
    "candidate",
    "removePeer",
    "adoptPeer",
    "hello",
    "peerState",
    "peerError",
    "",
    "JOIN",
    "teleport",
];
const FIELDS: &[&str] = &[
    "id",
    "type",
    "token",
    "name",
    "audio",
    "video",
    "sdp",
    "offer",
    "candidate",
    "sdpMid",
    "sdpMLineIndex",
    "enabled",
    "resumeToken",
    "room",
    "participantId",
    "nodeId",
    "udpAddr",
    "udpAddrs",
    "tracks",
    "state",
    "code",
    "message",
    "mid",
    "streamId",
    "kind",
    "source",
    "x",
];

/// Any JSON value, nested a few levels, with object keys drawn mostly from `FIELDS`.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(IDS).prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FIELDS).prop_map(String::from),
        1 => ".{0,12}",
    ]
}

/// An object tagged like a message of either protocol (`id` or `type` from `IDS`), with
/// arbitrary other fields.
fn message_shaped() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&["id", "type"][..]),
        prop::sample::select(IDS),
        prop::collection::vec((key(), json_value()), 0..8),
    )
        .prop_map(|(tag, id, fields)| {
            let mut map: Map<String, Value> = fields.into_iter().collect();
            map.insert(tag.to_string(), Value::from(id));
            Value::Object(map)
        })
}

fn text() -> impl Strategy<Value = String> {
    ".{0,60}"
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (
            text(),
            prop::option::of(text()),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(token, name, audio, video)| ClientMessage::Join {
                token,
                name,
                audio,
                video,
            }),
        text().prop_map(|sdp| ClientMessage::Offer { sdp }),
        text().prop_map(|sdp| ClientMessage::Answer { sdp }),
        (
            text(),
            prop::option::of(text()),
            prop::option::of(any::<u32>())
        )
            .prop_map(|(candidate, sdp_mid, sdp_m_line_index)| {
                ClientMessage::IceCandidate {
                    candidate,
                    sdp_mid,
                    sdp_m_line_index,
                }
            }),
        any::<bool>().prop_map(|enabled| ClientMessage::SetAudio { enabled }),
        any::<bool>().prop_map(|enabled| ClientMessage::SetVideo { enabled }),
        any::<bool>().prop_map(|enabled| ClientMessage::SetDeafened { enabled }),
        prop::collection::btree_map(
            text(),
            prop::sample::select(vec![
                TrackSource::Microphone,
                TrackSource::Camera,
                TrackSource::Screen
            ]),
            0..5
        )
        .prop_map(|sources| ClientMessage::SetSources { sources }),
        prop::collection::btree_map(text(), track_view(), 0..5)
            .prop_map(|views| ClientMessage::SetTrackViews { views }),
        Just(ClientMessage::Leave),
        Just(ClientMessage::Heartbeat),
        (text(), text()).prop_map(|(token, resume_token)| ClientMessage::Resume {
            token,
            resume_token,
        }),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
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
    ])
}

fn track_view() -> impl Strategy<Value = TrackView> {
    (
        any::<bool>(),
        prop::option::of(any::<u16>()),
        prop::option::of(any::<u16>()),
    )
        .prop_map(|(hidden, width, height)| TrackView {
            hidden,
            width,
            height,
        })
}

fn source() -> impl Strategy<Value = TrackSource> {
    prop::sample::select(vec![
        TrackSource::Microphone,
        TrackSource::Camera,
        TrackSource::Screen,
    ])
}

fn track() -> impl Strategy<Value = TrackInfo> {
    (
        text(),
        text(),
        text(),
        prop::sample::select(vec![TrackKind::Audio, TrackKind::Video]),
        source(),
    )
        .prop_map(|(mid, stream_id, participant_id, kind, source)| TrackInfo {
            mid,
            stream_id,
            participant_id,
            kind,
            source,
        })
}

fn media_command() -> impl Strategy<Value = MediaCommand> {
    prop_oneof![
        (
            text(),
            text(),
            text(),
            text(),
            prop::collection::btree_map(text(), source(), 0..4)
        )
            .prop_map(|(room, participant_id, offer, adopt_verifier, sources)| {
                MediaCommand::AddPeer {
                    room,
                    participant_id,
                    offer,
                    adopt_verifier,
                    sources,
                }
            }),
        (text(), text(), text()).prop_map(|(room, participant_id, sdp)| MediaCommand::Answer {
            room,
            participant_id,
            sdp,
        }),
        (text(), text(), text()).prop_map(|(room, participant_id, candidate)| {
            MediaCommand::Candidate {
                room,
                participant_id,
                candidate,
            }
        }),
        (
            text(),
            text(),
            prop::collection::btree_map(text(), track_view(), 0..4)
        )
            .prop_map(
                |(room, participant_id, views)| MediaCommand::SetTrackViews {
                    room,
                    participant_id,
                    views,
                }
            ),
        (text(), text()).prop_map(|(room, participant_id)| MediaCommand::RemovePeer {
            room,
            participant_id,
        }),
        (text(), text(), text(), text()).prop_map(
            |(room, participant_id, adopt_key, next_adopt_verifier)| MediaCommand::AdoptPeer {
                room,
                participant_id,
                adopt_key,
                next_adopt_verifier,
            }
        ),
    ]
}

fn media_event() -> impl Strategy<Value = MediaEvent> {
    prop_oneof![
        (
            text(),
            text(),
            prop::collection::vec(text(), 0..3),
            prop::option::of(text())
        )
            .prop_map(|(node_id, udp_addr, udp_addrs, proof)| MediaEvent::Hello {
                node_id,
                udp_addr,
                udp_addrs,
                proof,
            }),
        (text(), text(), text()).prop_map(|(room, participant_id, sdp)| MediaEvent::Answer {
            room,
            participant_id,
            sdp,
        }),
        (text(), text(), text(), prop::collection::vec(track(), 0..5)).prop_map(
            |(room, participant_id, sdp, tracks)| MediaEvent::Offer {
                room,
                participant_id,
                sdp,
                tracks,
            }
        ),
        (
            text(),
            text(),
            prop::sample::select(vec![
                MediaConnectionState::Connected,
                MediaConnectionState::Disconnected,
                MediaConnectionState::Failed,
            ])
        )
            .prop_map(|(room, participant_id, state)| MediaEvent::PeerState {
                room,
                participant_id,
                state,
            }),
        (text(), text(), error_code(), text()).prop_map(|(room, participant_id, code, message)| {
            MediaEvent::PeerError {
                room,
                participant_id,
                code,
                message,
            }
        }),
        (
            text(),
            prop::collection::vec(text(), 0..4),
            prop::option::of(text())
        )
            .prop_map(|(room, participants, dominant)| MediaEvent::Speaking {
                room,
                participants,
                dominant,
            }),
        (text(), text(), text(), prop::collection::vec(text(), 0..4)).prop_map(
            |(room, participant_id, mid, active)| MediaEvent::PublishLayers {
                room,
                participant_id,
                mid,
                active,
            }
        ),
    ]
}

/// What `parse_client_message` may answer for input that is not a valid message.
fn refused_cleanly(result: &Result<ClientMessage, (ErrorCode, String)>) -> bool {
    match result {
        Ok(_) => true,
        Err((code, message)) => {
            matches!(code, ErrorCode::BadMessage | ErrorCode::UnknownMessage) && !message.is_empty()
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn client_parser_survives_any_text(s in ".{0,200}") {
        let parsed = parse_client_message(&s);
        prop_assert!(refused_cleanly(&parsed), "{parsed:?}");
    }

    #[test]
    fn client_parser_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        let parsed = parse_client_message(&text);
        prop_assert!(refused_cleanly(&parsed), "{parsed:?}");
        let _ = serde_json::from_slice::<ClientMessage>(&bytes);
    }

    #[test]
    fn link_parsers_survive_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = serde_json::from_slice::<MediaCommand>(&bytes);
        let _ = serde_json::from_slice::<MediaEvent>(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = serde_json::from_str::<MediaCommand>(&text);
        let _ = serde_json::from_str::<MediaEvent>(&text);
    }

    #[test]
    fn m_line_count_survives_any_text(s in ".{0,300}", stop in 0usize..10) {
        let full = count_m_lines(&s, usize::MAX);
        prop_assert_eq!(count_m_lines(&s, stop), full.min(stop));
        // Never more than the `m=` pairs in the text.
        prop_assert!(full <= s.matches("m=").count());
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// Objects shaped like messages (a known or unknown `id`, fields of the right names with
    /// values of any type): refused with `bad_message`/`unknown_message`, or parsed into a
    /// message that serializes back to something that parses to the same message.
    #[test]
    fn client_parser_handles_json_shaped_input(v in message_shaped()) {
        let text = v.to_string();
        let parsed = parse_client_message(&text);
        prop_assert!(refused_cleanly(&parsed), "{parsed:?}");
        if let Ok(msg) = parsed {
            let again = parse_client_message(&serde_json::to_string(&msg).unwrap());
            prop_assert_eq!(again, Ok(msg));
        }
        if let Some(Value::String(id)) = v.get("id") {
            if !IDS[..CLIENT_IDS].contains(&id.as_str()) {
                prop_assert_eq!(parse_client_message(&text).unwrap_err().0, ErrorCode::UnknownMessage);
            }
        }
    }

    #[test]
    fn client_parser_handles_any_json(v in json_value()) {
        let parsed = parse_client_message(&v.to_string());
        prop_assert!(refused_cleanly(&parsed), "{parsed:?}");
    }

    #[test]
    fn link_parsers_handle_json_shaped_input(v in message_shaped()) {
        let text = v.to_string();
        if let Ok(cmd) = serde_json::from_str::<MediaCommand>(&text) {
            let back = serde_json::to_string(&cmd).unwrap();
            prop_assert_eq!(serde_json::from_str::<MediaCommand>(&back).unwrap(), cmd);
        }
        if let Ok(event) = serde_json::from_str::<MediaEvent>(&text) {
            let back = serde_json::to_string(&event).unwrap();
            prop_assert_eq!(serde_json::from_str::<MediaEvent>(&back).unwrap(), event);
        }
    }

    #[test]
    fn valid_client_messages_round_trip(msg in client_message()) {
        let text = serde_json::to_string(&msg).unwrap();
        prop_assert_eq!(parse_client_message(&text), Ok(msg.clone()));
        // Unknown extra fields are ignored.
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().insert("futureField".into(), Value::from(1));
        prop_assert_eq!(parse_client_message(&v.to_string()), Ok(msg));
    }

    #[test]
    fn valid_link_messages_round_trip(cmd in media_command(), event in media_event()) {
        let text = serde_json::to_string(&cmd).unwrap();
        prop_assert_eq!(serde_json::from_str::<MediaCommand>(&text).unwrap(), cmd);
        let text = serde_json::to_string(&event).unwrap();
        prop_assert_eq!(serde_json::from_str::<MediaEvent>(&text).unwrap(), event);
    }
}

/// An SDP of `sections` media sections, its lines ended by `ends` in turn (`\r\n`, `\n` or a
/// bare `\r`: SDP parsers accept all three), with `filler` attribute lines (never starting
/// with `m=`, but holding `m=` further in) in each section.
fn sdp(sections: usize, filler: usize, ends: &[&str]) -> String {
    let mut lines = vec![
        "v=0".to_string(),
        "o=- 1 2 IN IP4 127.0.0.1".into(),
        "s=-".into(),
        "t=0 0".into(),
    ];
    for i in 0..sections {
        lines.push(format!("m=video 9 UDP/TLS/RTP/SAVPF 96 {i}"));
        lines.push(format!("a=mid:{i}"));
        for f in 0..filler {
            lines.push(format!("a=x-note:m={f} mm=video"));
        }
    }
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        out.push_str(ends[i % ends.len()]);
    }
    out
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn m_lines_are_counted_whatever_the_line_ends(
        sections in 0usize..40,
        filler in 0usize..4,
        ends in prop::collection::vec(prop::sample::select(&["\r\n", "\n", "\r"][..]), 1..4),
    ) {
        let text = sdp(sections, filler, &ends);
        prop_assert_eq!(count_m_lines(&text, usize::MAX), sections);
    }

    /// `check_offer` refuses exactly the offers over a cap, and names the size cap first.
    #[test]
    fn an_offer_is_refused_exactly_when_over_a_cap(
        sections in 0usize..30,
        filler in 0usize..6,
        max_sdp_bytes in 100u32..4000,
        max_offer_m_lines in 1u32..10,
    ) {
        let caps = ParticipantCaps { max_sdp_bytes, max_offer_m_lines, ..ParticipantCaps::default() };
        let text = sdp(sections, filler, &["\r\n"]);
        let expected = if text.len() > max_sdp_bytes as usize {
            Err(CapExceeded::SdpTooLarge { size: text.len(), limit: max_sdp_bytes })
        } else if sections > max_offer_m_lines as usize {
            Err(CapExceeded::TooManyMLines { limit: max_offer_m_lines })
        } else {
            Ok(())
        };
        prop_assert_eq!(caps.check_offer(&text), expected);
    }
}
