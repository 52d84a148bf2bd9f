//! Following a failover from the outside: several coordinators share one database, one active
//! and the others standing by. A standby answers every request `503` with error code `standby`
//! and names the active coordinator's URL in [`ACTIVE_HEADER`] (empty while none is active).
//! Everything that is given a list of coordinators (workers, relays, clients) reads that hint
//! the same way, here: [`standby_hint`] and [`Coordinators::next`].

/// Header naming the active coordinator's URL on a standby's answers (empty when none is).
pub const ACTIVE_HEADER: &str = "x-runegrid-active";

/// Whether an answer is a standby's refusal: `Some(hint)` when it is (`hint` the active
/// coordinator's URL, without a trailing slash, when the standby named one), `None` when it is
/// any other answer. `active` is the value of [`ACTIVE_HEADER`] when the answer has one.
pub fn standby_hint(status: u16, active: Option<&[u8]>) -> Option<Option<String>> {
    if status != 503 {
        return None;
    }
    let value = active?;
    let url = std::str::from_utf8(value)
        .ok()
        .map(|v| v.trim().trim_end_matches('/'))
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    Some(url)
}

/// The coordinators given (base URLs, in order) and which one is in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinators {
    urls: Vec<String>,
    at: usize,
}

impl Coordinators {
    /// The coordinators of a `URL1,URL2,...` value (trailing slashes dropped); `None` when
    /// it names none.
    pub fn parse(spec: &str) -> Option<Coordinators> {
        let urls: Vec<String> = spec
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        (!urls.is_empty()).then_some(Coordinators { urls, at: 0 })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The coordinator in use.
    pub fn current(&self) -> &str {
        &self.urls[self.at]
    }

    pub fn index(&self) -> usize {
        self.at
    }

    /// Moves on after the coordinator in use could not be used: to the active one a standby
    /// named (`hint`) when it is one of the list, else to the next one given. Returns whether
    /// the hint was followed (then there is no need to wait before dialling it).
    pub fn next(&mut self, hint: Option<&str>) -> bool {
        let named = hint.and_then(|h| {
            let h = h.trim_end_matches('/');
            self.urls.iter().position(|u| u == h)
        });
        self.at = named.unwrap_or((self.at + 1) % self.urls.len());
        named.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_refusal_and_its_hint() {
        assert_eq!(
            standby_hint(503, Some(b"http://a:1/")),
            Some(Some("http://a:1".into()))
        );
        assert_eq!(standby_hint(503, Some(b"")), Some(None));
        assert_eq!(standby_hint(503, None), None);
        assert_eq!(standby_hint(502, Some(b"http://a:1")), None);
        assert_eq!(standby_hint(200, None), None);
    }

    #[test]
    fn the_hint_is_followed_when_listed_else_the_next_one() {
        let mut c = Coordinators::parse(" http://a:1/, http://b:2 ,,http://c:3").unwrap();
        assert_eq!(c.urls(), ["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(c.current(), "http://a:1");
        assert!(c.next(Some("http://c:3/")));
        assert_eq!(c.current(), "http://c:3");
        // Not one of ours: the next one, wrapping around.
        assert!(!c.next(Some("http://elsewhere:9")));
        assert_eq!(c.current(), "http://a:1");
        assert!(!c.next(None));
        assert_eq!(c.index(), 1);
        assert!(Coordinators::parse(" , ").is_none());
    }
}
