//! End-to-end tests of the signaling node over real sockets: a real server on 127.0.0.1:0
//! with its embedded media node, driven by WebSocket clients.

mod caps;
mod cluster;
mod cluster_heartbeat;
mod cluster_load;
mod cluster_support;
mod identities;
mod limits;
mod link_auth;
mod operator_safety;
mod redis_secured;
mod support;
mod tls;
mod turn;
mod web_client;
mod ws_bad_input;
mod ws_rooms;
