//! The watch's config file (TOML): the names, what is expected of them, the
//! resolver and the alert routes. Every problem is one line naming the key.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer};

/// A problem with the config file, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {problem}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub problem: String,
}

/// The whole file, checked and with its secrets read.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub resolver: ResolverConfig,
    pub domains: Vec<Domain>,
    pub routes: BTreeMap<String, Route>,
    /// Events kept per name for the status endpoint.
    pub history: usize,
    /// The language addresses are located in (queryGeoInfo's lang); none
    /// for zh-CN.
    pub lang: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// `IP:PORT` of each nameserver; empty for the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// One query's wait before it is tried again.
    pub timeout: Duration,
    /// Tries of each query.
    pub attempts: usize,
    /// Names resolved at once.
    pub concurrency: usize,
}

/// One watched name and what is expected of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Domain {
    pub name: String,
    pub interval: Duration,
    /// Rounds a change must hold before it is confirmed.
    pub confirm: u32,
    pub compare: Compare,
    /// Rounds whose answers are pooled before comparing.
    pub window: u32,
    pub routes: Vec<String>,
    pub expect: Expect,
}

/// What a round's answer is compared by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compare {
    /// The set of addresses.
    Addresses,
    /// The set of places (country, province, city, carrier, AS) the
    /// addresses are in: a pool that rotates within its places is quiet.
    Places,
}

/// Expectations; an empty list allows anything.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Country codes (`CN`) or names, as answers give them.
    #[serde(default)]
    pub countries: Vec<String>,
    #[serde(default)]
    pub provinces: Vec<String>,
    #[serde(default)]
    pub carriers: Vec<String>,
    /// Networks every address must be in.
    #[serde(default)]
    pub networks: Vec<IpNetwork>,
    #[serde(default)]
    pub min_addresses: Option<usize>,
    #[serde(default)]
    pub max_addresses: Option<usize>,
    /// Whether failing to resolve alerts (true by default).
    #[serde(default = "yes")]
    pub must_resolve: bool,
}

fn yes() -> bool {
    true
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            countries: Vec::new(),
            provinces: Vec::new(),
            carriers: Vec::new(),
            networks: Vec::new(),
            min_addresses: None,
            max_addresses: None,
            must_resolve: true,
        }
    }
}

/// Where alerts go.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub kind: RouteKind,
    /// Messages a minute; more wait their turn.
    pub per_minute: u32,
    /// Tries after the first before a message is logged as failed.
    pub retries: u32,
    /// The first wait between tries; doubled each time.
    pub backoff: Duration,
    /// One try's limit.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum RouteKind {
    /// The change as JSON, POSTed.
    Webhook { url: String },
    /// A WeCom (企业微信) group robot.
    WeCom { url: String },
    /// A DingTalk group robot; with a secret, requests are signed.
    DingTalk { url: String, secret: Option<String> },
    /// A Slack-compatible incoming webhook.
    Slack { url: String },
    /// Mail over SMTP.
    Email(Mail),
}

#[derive(Debug, Clone)]
pub struct Mail {
    pub server: String,
    pub port: u16,
    pub tls: MailTls,
    pub from: String,
    pub to: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTls {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the
    /// server does not offer it.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: a relay on the same host only.
    None,
}

// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    resolver: ResolverFile,
    #[serde(default)]
    domains: Vec<DomainFile>,
    #[serde(default)]
    routes: BTreeMap<String, RouteFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    #[serde(default = "default_interval", deserialize_with = "duration")]
    interval: Duration,
    #[serde(default = "default_confirm")]
    confirm: u32,
    #[serde(default = "default_compare")]
    compare: Compare,
    #[serde(default = "default_window")]
    window: u32,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default = "default_history")]
    history: usize,
    #[serde(default)]
    lang: Option<String>,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            interval: default_interval(),
            confirm: default_confirm(),
            compare: default_compare(),
            window: default_window(),
            routes: Vec::new(),
            history: default_history(),
            lang: None,
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_confirm() -> u32 {
    2
}
fn default_compare() -> Compare {
    Compare::Addresses
}
fn default_window() -> u32 {
    1
}
fn default_history() -> usize {
    20
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolverFile {
    #[serde(default)]
    nameservers: Vec<SocketAddr>,
    #[serde(default = "default_dns_timeout", deserialize_with = "duration")]
    timeout: Duration,
    #[serde(default = "default_attempts")]
    attempts: usize,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
}

impl Default for ResolverFile {
    fn default() -> Self {
        ResolverFile {
            nameservers: Vec::new(),
            timeout: default_dns_timeout(),
            attempts: default_attempts(),
            concurrency: default_concurrency(),
        }
    }
}

fn default_dns_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_attempts() -> usize {
    2
}
fn default_concurrency() -> usize {
    256
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainFile {
    name: String,
    #[serde(default, deserialize_with = "optional_duration")]
    interval: Option<Duration>,
    confirm: Option<u32>,
    compare: Option<Compare>,
    window: Option<u32>,
    routes: Option<Vec<String>>,
    #[serde(default)]
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    kind: Kind,
    url: Option<Secret>,
    secret: Option<Secret>,
    server: Option<String>,
    port: Option<u16>,
    tls: Option<MailTls>,
    from: Option<String>,
    #[serde(default)]
    to: Vec<String>,
    username: Option<Secret>,
    password: Option<Secret>,
    #[serde(default = "default_per_minute")]
    per_minute: u32,
    #[serde(default = "default_retries")]
    retries: u32,
    #[serde(default = "default_backoff", deserialize_with = "duration")]
    backoff: Duration,
    #[serde(default = "default_route_timeout", deserialize_with = "duration")]
    timeout: Duration,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Webhook,
    Wecom,
    Dingtalk,
    Slack,
    Email,
}

fn default_per_minute() -> u32 {
    20
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_route_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A value that may be secret: written in the file, or read from an
/// environment variable or a file, so that it never has to be on a
/// command line or in the config.
#[derive(Deserialize)]
#[serde(untagged)]
enum Secret {
    Literal(String),
    Env { env: String },
    File { file: PathBuf },
}

impl Secret {
    fn read(&self) -> Result<String, String> {
        match self {
            Secret::Literal(value) => Ok(value.clone()),
            Secret::Env { env } => std::env::var(env).map_err(|_| format!("environment variable {env} is not set")),
            Secret::File { file } => std::fs::read_to_string(file)
                .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|err| format!("cannot read {}: {err}", file.display())),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|err| serde::de::Error::custom(format!("{text:?} is not a duration: {err}")))
}

fn optional_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

impl WatchConfig {
    /// Reads and checks the config file.
    pub fn load(path: &Path) -> Result<WatchConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            problem: err.to_string(),
        })?;
        WatchConfig::parse(&file, &text)
    }

    /// Checks a config's text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<WatchConfig, ConfigError> {
        let error = |key: &str, problem: String| ConfigError {
            file: file.to_owned(),
            key: key.to_owned(),
            problem,
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|err| error("(syntax)", toml_message(&err, text)))?;
        let parsed: File = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            error(&key, toml_message(err.inner(), text))
        })?;

        let resolver = ResolverConfig {
            nameservers: parsed.resolver.nameservers,
            timeout: parsed.resolver.timeout,
            attempts: parsed.resolver.attempts,
            concurrency: parsed.resolver.concurrency,
        };
        if resolver.attempts == 0 {
            return Err(error("resolver.attempts", "must be at least 1".into()));
        }
        if resolver.concurrency == 0 {
            return Err(error("resolver.concurrency", "must be at least 1".into()));
        }
        if resolver.timeout.is_zero() {
            return Err(error("resolver.timeout", "must be more than zero".into()));
        }

        let mut routes = BTreeMap::new();
        for (name, route) in parsed.routes {
            let key = format!("routes.{name}");
            routes.insert(
                name.clone(),
                route_of(&name, route).map_err(|(field, problem)| error(&format!("{key}.{field}"), problem))?,
            );
        }

        let defaults = parsed.defaults;
        check_positive(&error, "defaults.confirm", defaults.confirm)?;
        check_positive(&error, "defaults.window", defaults.window)?;
        check_interval(&error, "defaults.interval", defaults.interval)?;
        check_routes(&error, "defaults.routes", &defaults.routes, &routes)?;
        if let Some(lang) = &defaults.lang {
            crate::service::Route::for_request(Some(lang)).map_err(|err| error("defaults.lang", err.to_string()))?;
        }

        let mut seen = HashSet::new();
        let mut domains = Vec::with_capacity(parsed.domains.len());
        for (i, domain) in parsed.domains.into_iter().enumerate() {
            let key = |field: &str| format!("domains[{i}].{field}");
            let name = normalise_name(&domain.name).map_err(|problem| error(&key("name"), problem))?;
            if !seen.insert(name.clone()) {
                return Err(error(&key("name"), format!("{name} is watched twice")));
            }
            let built = Domain {
                name,
                interval: domain.interval.unwrap_or(defaults.interval),
                confirm: domain.confirm.unwrap_or(defaults.confirm),
                compare: domain.compare.unwrap_or(defaults.compare),
                window: domain.window.unwrap_or(defaults.window),
                routes: domain.routes.unwrap_or_else(|| defaults.routes.clone()),
                expect: domain.expect,
            };
            check_positive(&error, &key("confirm"), built.confirm)?;
            check_positive(&error, &key("window"), built.window)?;
            check_interval(&error, &key("interval"), built.interval)?;
            check_routes(&error, &key("routes"), &built.routes, &routes)?;
            if let (Some(min), Some(max)) = (built.expect.min_addresses, built.expect.max_addresses) {
                if min > max {
                    return Err(error(
                        &key("expect.min_addresses"),
                        format!("{min} is above max_addresses {max}"),
                    ));
                }
            }
            domains.push(built);
        }
        if domains.is_empty() {
            return Err(error("domains", "no names to watch".into()));
        }
        Ok(WatchConfig {
            resolver,
            domains,
            routes,
            history: defaults.history.max(1),
            lang: defaults.lang,
        })
    }
}

/// The toml error's own message, with the line it points at.
fn toml_message(err: &toml::de::Error, text: &str) -> String {
    let message = err.message().trim().to_owned();
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("{message} (line {line})")
        }
        None => message,
    }
}

fn check_positive<E>(error: &impl Fn(&str, String) -> E, key: &str, value: u32) -> Result<(), E> {
    if value == 0 {
        return Err(error(key, "must be at least 1".into()));
    }
    Ok(())
}

fn check_interval<E>(error: &impl Fn(&str, String) -> E, key: &str, value: Duration) -> Result<(), E> {
    if value < Duration::from_millis(100) {
        return Err(error(
            key,
            format!("{} is too short (at least 100ms)", humantime::format_duration(value)),
        ));
    }
    Ok(())
}

fn check_routes<E>(
    error: &impl Fn(&str, String) -> E,
    key: &str,
    names: &[String],
    routes: &BTreeMap<String, Route>,
) -> Result<(), E> {
    match names.iter().find(|name| !routes.contains_key(*name)) {
        Some(name) => Err(error(key, format!("no route named {name:?} under [routes]"))),
        None => Ok(()),
    }
}

/// A DNS name in lower case without its final dot.
fn normalise_name(name: &str) -> Result<String, String> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{name:?} is not a DNS name"));
    }
    for label in name.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(format!("{name:?} is not a DNS name (label {label:?})"));
        }
    }
    Ok(name)
}

fn route_of(name: &str, file: RouteFile) -> Result<Route, (&'static str, String)> {
    let read = |secret: &Option<Secret>, field: &'static str| -> Result<Option<String>, (&'static str, String)> {
        secret
            .as_ref()
            .map(|s| s.read().map_err(|problem| (field, problem)))
            .transpose()
    };
    let url = || -> Result<String, (&'static str, String)> {
        let url = read(&file.url, "url")?.ok_or(("url", "is required for this kind".to_owned()))?;
        let parsed = reqwest::Url::parse(&url).map_err(|err| ("url", format!("not a URL: {err}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(("url", "must be http or https".into()));
        }
        Ok(url)
    };
    let kind = match file.kind {
        Kind::Webhook => RouteKind::Webhook { url: url()? },
        Kind::Wecom => RouteKind::WeCom { url: url()? },
        Kind::Slack => RouteKind::Slack { url: url()? },
        Kind::Dingtalk => RouteKind::DingTalk {
            url: url()?,
            secret: read(&file.secret, "secret")?,
        },
        Kind::Email => {
            let server = file
                .server
                .clone()
                .ok_or(("server", "is required for email".to_owned()))?;
            let tls = file.tls.unwrap_or(MailTls::Starttls);
            let port = file.port.unwrap_or(match tls {
                MailTls::Starttls => 587,
                MailTls::Tls => 465,
                MailTls::None => 25,
            });
            let from = file.from.clone().ok_or(("from", "is required for email".to_owned()))?;
            check_mailbox(&from).map_err(|problem| ("from", problem))?;
            if file.to.is_empty() {
                return Err(("to", "needs at least one address".into()));
            }
            for to in &file.to {
                check_mailbox(to).map_err(|problem| ("to", problem))?;
            }
            let username = read(&file.username, "username")?;
            let password = read(&file.password, "password")?;
            if username.is_some() != password.is_some() {
                return Err(("password", "username and password go together".into()));
            }
            RouteKind::Email(Mail {
                server,
                port,
                tls,
                from,
                to: file.to.clone(),
                username,
                password,
            })
        }
    };
    if !matches!(kind, RouteKind::Email(_)) {
        for (field, given) in [
            ("server", file.server.is_some()),
            ("from", file.from.is_some()),
            ("to", !file.to.is_empty()),
        ] {
            if given {
                return Err((field, "is for email routes only".into()));
            }
        }
    }
    if file.secret.is_some() && !matches!(kind, RouteKind::DingTalk { .. }) {
        return Err(("secret", "is for dingtalk routes only".into()));
    }
    if file.per_minute == 0 {
        return Err(("per_minute", "must be at least 1".into()));
    }
    Ok(Route {
        name: name.to_owned(),
        kind,
        per_minute: file.per_minute,
        retries: file.retries,
        backoff: file.backoff,
        timeout: file.timeout,
    })
}

fn check_mailbox(address: &str) -> Result<(), String> {
    address
        .parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|err| format!("{address:?} is not a mail address: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WatchConfig, ConfigError> {
        WatchConfig::parse("watch.toml", text)
    }

    #[test]
    fn domains_take_the_defaults_they_do_not_override() {
        let config = parse(
            r#"
            [defaults]
            interval = "30s"
            routes = ["ops"]
            [routes.ops]
            kind = "webhook"
            url = "http://127.0.0.1:9/hook"
            [[domains]]
            name = "WWW.Example.com."
            [[domains]]
            name = "api.example.com"
            confirm = 3
            compare = "places"
            expect = { countries = ["CN"], max_addresses = 4 }
            "#,
        )
        .unwrap();
        assert_eq!(config.domains[0].name, "www.example.com");
        assert_eq!(config.domains[0].interval, Duration::from_secs(30));
        assert_eq!(config.domains[0].confirm, 2);
        assert_eq!(config.domains[1].confirm, 3);
        assert_eq!(config.domains[1].compare, Compare::Places);
        assert_eq!(config.domains[1].expect.max_addresses, Some(4));
        assert!(config.domains[1].expect.must_resolve);
        assert!(config.domains[0].expect.must_resolve, "without an expect table too");
        assert_eq!(config.domains[1].routes, ["ops"]);
    }

    #[test]
    fn each_mistake_is_one_line_naming_its_key() {
        let cases = [
            (
                "[[domains]]\nname = \"a.com\"\nintervall = \"1s\"",
                "domains[0].intervall: unknown field `intervall`",
            ),
            (
                "[[domains]]\nname = \"a.com\"\ninterval = \"soon\"",
                "domains[0].interval: \"soon\" is not a duration",
            ),
            ("[[domains]]\nname = \"a..com\"", "domains[0].name:"),
            (
                "[[domains]]\nname = \"a.com\"\nroutes = [\"x\"]",
                "domains[0].routes: no route named \"x\"",
            ),
            (
                "[[domains]]\nname = \"a.com\"\nconfirm = 0",
                "domains[0].confirm: must be at least 1",
            ),
            (
                "[resolver]\nnameservers = [\"1.2.3.4\"]\n[[domains]]\nname = \"a.com\"",
                "resolver.nameservers[0]",
            ),
            (
                "[routes.r]\nkind = \"dingtalk\"\n[[domains]]\nname = \"a.com\"",
                "routes.r.url: is required",
            ),
            (
                "[routes.r]\nkind = \"carrier-pigeon\"",
                "routes.r.kind: unknown variant",
            ),
            (
                "[routes.r]\nkind = \"slack\"\nurl = { env = \"XM_WATCH_NO_SUCH_VARIABLE\" }",
                "routes.r.url: environment variable XM_WATCH_NO_SUCH_VARIABLE is not set",
            ),
            (
                "[routes.m]\nkind = \"email\"\nserver = \"mx\"\nfrom = \"a@b.c\"",
                "routes.m.to: needs at least one",
            ),
            (
                "[[domains]]\nname = \"a.com\"\n[[domains]]\nname = \"A.com\"",
                "domains[1].name: a.com is watched twice",
            ),
            ("", "domains: no names to watch"),
            ("[[domains]\n", "(syntax)"),
        ];
        for (text, expected) in cases {
            let message = parse(text).unwrap_err().to_string();
            assert!(message.starts_with("watch.toml: "), "{message}");
            assert!(
                message.contains(expected),
                "{text:?} gave {message:?}, expected {expected:?}"
            );
            assert!(!message.contains('\n'), "more than one line: {message:?}");
        }
    }

    #[test]
    fn secrets_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "SEC123\n").unwrap();
        let text = format!(
            "[routes.d]\nkind = \"dingtalk\"\nurl = \"https://oapi.dingtalk.com/robot/send?access_token=x\"\nsecret = {{ file = {:?} }}\n[[domains]]\nname = \"a.com\"",
            secret.display().to_string()
        );
        let config = parse(&text).unwrap();
        match &config.routes["d"].kind {
            RouteKind::DingTalk { secret, .. } => assert_eq!(secret.as_deref(), Some("SEC123")),
            other => panic!("{other:?}"),
        }
    }
}
