//! The one error-chain printer every Hearth crate uses (they all depend on
//! this crate): an error and its whole `source()` chain on one line,
//! `outer: middle: root`, for logs and for messages such as `last_error`.

use std::error::Error;

/// `e` and every error in its `source()` chain, joined by `": "`.
pub fn error_chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// `e`, then each error down its `source()` chain: what code that looks
/// for one kind of cause (a full disk, a console tail) walks.
pub fn causes<'a>(e: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(e), |&e| e.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("writing the snapshot")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn prints_every_cause_in_order() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&e), "writing the snapshot: disk full");
        assert_eq!(error_chain(&e.0), "disk full");
        let found: Vec<String> = causes(&e).map(|c| c.to_string()).collect();
        assert_eq!(found, ["writing the snapshot", "disk full"]);
    }
}
