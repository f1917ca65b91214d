//! URLs as shown to the operator: the password of a `user:password@` never appears
//! (dry runs, errors, plans, webhooks). Parsing is [`http::Uri`]'s, not a hand-made one.

/// `url` with any userinfo shown as `user:***@` (`***@` without a user name).
pub fn userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((info, host)) => {
            let user = info.split(':').next().unwrap_or_default();
            let shown = if user.is_empty() {
                "***".to_string()
            } else {
                format!("{user}:***")
            };
            format!("{scheme}://{shown}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// Scheme and host only (`https://hooks.example/…`), userinfo redacted: for URLs whose
/// path is a secret too (webhooks).
pub fn host_only(url: &str) -> String {
    let shown = userinfo(url);
    let (scheme, rest) = shown.split_once("://").unwrap_or(("", &shown));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    format!("{scheme}://{host}/…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(
            userinfo("http://user:pw@host:9090/api?q=1"),
            "http://user:***@host:9090/api?q=1"
        );
        assert_eq!(userinfo("http://token@host/"), "http://token:***@host/");
        assert_eq!(userinfo("http://:pw@host"), "http://***@host");
        assert_eq!(userinfo("http://host:9090/a@b"), "http://host:9090/a@b");
        assert_eq!(userinfo("not a url"), "not a url");
        assert_eq!(
            host_only("https://u:secret@hooks.example/T/B/SECRET"),
            "https://u:***@hooks.example/…"
        );
    }
}
