//! The `media-node` process refuses to start with a clear message naming what it could not
//! bind, and exits with status 1 (`StartError`).

use std::net::{TcpListener, UdpSocket};
use std::process::Command;

fn run_media_node(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_media-node"))
        .args(args)
        .output()
        .expect("media-node runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_taken_udp_port_is_named_in_the_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, stderr) = run_media_node(&["--listen", "127.0.0.1:0", "--udp-listen", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("media-node: cannot bind media UDP {addr}")),
        "{stderr}"
    );
}

#[test]
fn a_taken_internal_port_is_named_in_the_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, stderr) = run_media_node(&["--listen", &addr, "--udp-listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("media-node: cannot listen on {addr}")),
        "{stderr}"
    );
}
