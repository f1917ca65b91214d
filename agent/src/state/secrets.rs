//! What is masked in output (job events, errors, `hoist logs` lines): the values of the
//! app's secret keys in `shared/.env` ([`App::is_secret_key`]: `secret_keys` and the
//! default patterns), and the password of any `scheme://user:PASSWORD@host` — in a
//! `.env` value (masked wherever it appears) or written in the line itself. Ordinary
//! values (hosts, `APP_ENV`, the app's name) stay readable.

use crate::{
    config::App,
    state::{beneath::Dir, envfile::EnvFile},
};

/// What a secret is replaced with.
pub const MASK: &str = "••••";

/// Shortest value that is masked (shorter ones would mask noise, and are no secret).
const MIN_SECRET_LEN: usize = 4;

/// The values to mask for one app, longest first (so a value holding another is
/// masked whole).
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    /// The secrets of `app` in `shared/.env` beneath `shared` (none when there is no
    /// readable `.env`; it is read by the one `.env` parser, never through a link).
    pub fn read(app: &App, shared: Option<&Dir>) -> Secrets {
        match shared.and_then(|dir| EnvFile::read_from(dir, ".env").ok().flatten()) {
            Some(env) => Secrets::of(app, &env),
            None => Secrets::default(),
        }
    }

    /// The secrets of `app` in `env`.
    pub fn of(app: &App, env: &EnvFile) -> Secrets {
        let mut values = Vec::new();
        for key in env.keys() {
            let Some(value) = env.get(&key) else { continue };
            values.extend(url_passwords(&value).into_iter().map(str::to_string));
            if app.is_secret_key(&key) {
                values.push(value);
            }
        }
        values.retain(|v| v.len() >= MIN_SECRET_LEN);
        values.sort_by_key(|s| std::cmp::Reverse(s.len()));
        values.dedup();
        Secrets { values }
    }

    /// The longest secret's length in bytes (0: none): how much of a line cut in two
    /// must be held back to mask a secret across the cut.
    pub fn longest(&self) -> usize {
        self.values.first().map_or(0, String::len)
    }

    /// `line` with every secret value and every URL password masked.
    pub fn mask(&self, line: &str) -> String {
        let mut line = line.to_string();
        for secret in &self.values {
            if line.contains(secret.as_str()) {
                line = line.replace(secret.as_str(), MASK);
            }
        }
        mask_url_passwords(&line)
    }
}

/// The passwords of the `scheme://user:PASSWORD@host` URLs in `text`.
fn url_passwords(text: &str) -> Vec<&str> {
    userinfo_passwords(text)
        .into_iter()
        .map(|r| &text[r])
        .collect()
}

/// `text` with the password of every `scheme://user:PASSWORD@host` masked.
pub fn mask_url_passwords(text: &str) -> String {
    let ranges = userinfo_passwords(text);
    if ranges.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for r in ranges {
        out.push_str(&text[at..r.start]);
        out.push_str(MASK);
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Byte ranges of the passwords in `scheme://user:PASSWORD@host` URLs in `text`: after
/// each `://` preceded by a scheme, the authority runs to the first `/`, `?`, `#`,
/// space, quote or `<>`; its userinfo is what comes before its last `@`, and the
/// password what comes after the userinfo's first `:`.
fn userinfo_passwords(text: &str) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find("://").map(|p| p + from) {
        let start = pos + 3;
        from = start;
        let has_scheme = pos > 0
            && bytes[pos - 1].is_ascii_alphanumeric()
            && bytes[..pos]
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_alphanumeric() || b"+.-".contains(b))
                .count()
                > 0;
        if !has_scheme {
            continue;
        }
        let end = bytes[start..]
            .iter()
            .position(|b| b"/?#\"'<>`".contains(b) || b.is_ascii_whitespace())
            .map_or(bytes.len(), |e| e + start);
        let authority = &text[start..end];
        let Some(at) = authority.rfind('@') else {
            continue;
        };
        if let Some(colon) = authority[..at].find(':')
            && colon + 1 < at
        {
            found.push(start + colon + 1..start + at);
        }
        from = end;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::envfile::EnvFile;

    fn app(secret_keys: &[&str]) -> App {
        let text = format!(
            "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[[app]]\nname = \"carbex\"\nrepo = \"r\"\n\
             deploy_to = \"/srv/carbex\"\nsecret_keys = {secret_keys:?}\n"
        );
        crate::config::parse(&text, std::path::Path::new("/etc/hoist/agent.toml"))
            .unwrap()
            .apps
            .remove(0)
    }

    const ENV: &str = "APP_NAME=carbex\nAPP_ENV=production\nAPP_KEY=base64:c2VjcmV0a2V5\n\
        DB_HOST=127.0.0.1\nDB_PASSWORD=hunter22\nREDIS_URL=redis://default:r3dispass@127.0.0.1:6379/0\n\
        DATABASE_URL=postgres://app:pgpass99@127.0.0.1:5432/carbex\nSTRIPE_SK=sk_live_abcdef\n\
        MAIL_FROM=ops@example.com\nAPI_TOKEN=tok-123456\n";

    #[test]
    fn secret_keys_are_masked_and_ordinary_values_stay_readable() {
        let secrets = Secrets::of(&app(&[]), &EnvFile::parse(ENV));
        let line = "carbex-worker:* on 127.0.0.1 APP_ENV=production --namespace production \
                    pw hunter22 key base64:c2VjcmV0a2V5 tok-123456 sk_live_abcdef";
        assert_eq!(
            secrets.mask(line),
            "carbex-worker:* on 127.0.0.1 APP_ENV=production --namespace production \
             pw •••• key •••• •••• sk_live_abcdef"
        );
        // A password from a URL in .env is masked wherever it appears; the host is not.
        assert_eq!(
            secrets.mask("AUTH r3dispass failed; connecting to http://127.0.0.1:51081/health"),
            "AUTH •••• failed; connecting to http://127.0.0.1:51081/health"
        );
        // DATABASE_URL is a secret key: its whole value.
        assert_eq!(
            secrets.mask("dsn=postgres://app:pgpass99@127.0.0.1:5432/carbex"),
            "dsn=••••"
        );
    }

    #[test]
    fn declared_secret_keys_add_to_the_defaults() {
        let secrets = Secrets::of(&app(&["STRIPE_*"]), &EnvFile::parse(ENV));
        assert_eq!(
            secrets.mask("charging with sk_live_abcdef"),
            "charging with ••••"
        );
        assert_eq!(secrets.mask("hunter22"), "••••");
    }

    #[test]
    fn url_passwords_are_masked_in_any_line() {
        let s = Secrets::default();
        assert_eq!(
            s.mask("git clone https://deploy:ghp_XYZ123@github.com/acme/shop.git failed"),
            "git clone https://deploy:••••@github.com/acme/shop.git failed"
        );
        assert_eq!(
            s.mask("\"amqp://u:p4ss@mq:5672\" and mysql://root:x@db/app"),
            "\"amqp://u:••••@mq:5672\" and mysql://root:••••@db/app"
        );
        // No password, a port, an @ in the path, no scheme: untouched.
        for plain in [
            "http://127.0.0.1:51081/api",
            "https://token@host/",
            "http://host/a:b@c",
            "see ://user:pw@host",
            "ops@example.com:secret",
        ] {
            assert_eq!(s.mask(plain), plain);
        }
    }
}
