//! Names that become parts of Redis keys and channels: communities, rooms (from access
//! tokens), media node ids and signaling ids (from flags). Keys join names with `:` and room
//! ids join community and room with `/` (`{prefix}room:{community}/{room}:members`), so a
//! name holding either could name another thing's key: a room `x:members` would be room
//! `x`'s member hash. Every such name is therefore checked where it enters, against one
//! documented charset (docs/protocol.md, "Access tokens"; README, flags).

/// Longest name, in bytes (the charset is ASCII, so also in characters).
pub const NAME_MAX_LEN: usize = 128;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must be 1 to {NAME_MAX_LEN} characters")]
    Length,
    #[error("may hold only ASCII letters, digits, '-', '_' and '.'")]
    Charset,
}

/// Whether `c` may appear in a name: ASCII letters, digits, `-`, `_`, `.` (none of the key
/// separators `:` and `/`, no glob characters of `PSUBSCRIBE` patterns, no spaces).
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Check a community, room, media node or signaling id.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > NAME_MAX_LEN {
        return Err(NameError::Length);
    }
    if !name.chars().all(is_name_char) {
        return Err(NameError::Charset);
    }
    Ok(())
}

/// Check a room id as the store takes it: `{community}/{room}` (what the signaling node
/// uses), or one bare name; never more than one `/`.
pub fn check_room_id(room_id: &str) -> Result<(), NameError> {
    match room_id.split_once('/') {
        Some((community, room)) => check_name(community).and_then(|()| check_name(room)),
        None => check_name(room_id),
    }
}

/// For clap's `value_parser`: a flag naming a node.
pub fn parse_name(name: &str) -> Result<String, String> {
    check_name(name)
        .map(|()| name.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_odd_characters_are_refused() {
        for ok in [
            "general",
            "x",
            "room-1",
            "a_b.c",
            "A9",
            &"r".repeat(NAME_MAX_LEN),
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "x:members",
            "a/b",
            "r*",
            "r?",
            "r[1]",
            "a b",
            "é",
            "x\n",
            "{x}",
        ] {
            assert_eq!(check_name(bad), Err(NameError::Charset), "{bad:?}");
        }
        assert_eq!(check_name(""), Err(NameError::Length));
        assert_eq!(
            check_name(&"r".repeat(NAME_MAX_LEN + 1)),
            Err(NameError::Length)
        );
        assert_eq!(check_room_id("acme/general"), Ok(()));
        assert_eq!(check_room_id("general"), Ok(()));
        for bad in ["acme/x:members", "x:members", "a/b/c", "/x", "x/"] {
            assert!(check_room_id(bad).is_err(), "{bad}");
        }
    }
}
