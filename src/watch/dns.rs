//! Resolving a watched name: A and AAAA, following CNAME chains, through
//! the configured nameservers or the system's resolv.conf.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig as HickoryConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use super::change::Failure;
use super::config::ResolverConfig;

/// One name's DNS answer, before the addresses are located.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    Resolved {
        chain: Vec<String>,
        addresses: BTreeSet<IpAddr>,
    },
    Failed {
        failure: Failure,
        detail: String,
    },
}

/// The resolver the watch asks; it caches nothing, so that each round sees
/// what the nameservers say now.
pub struct Dns {
    resolver: TokioResolver,
    /// A bound on one name's A and AAAA queries together, tries included.
    limit: Duration,
}

impl Dns {
    pub fn new(config: &ResolverConfig) -> anyhow::Result<Dns> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if config.nameservers.is_empty() {
            Resolver::builder(provider)
                .map_err(|err| anyhow::anyhow!("cannot read the system's resolver configuration: {err}"))?
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|server| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = server.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = server.port();
                    NameServerConfig::new(server.ip(), true, vec![udp, tcp])
                })
                .collect();
            Resolver::builder_with_config(HickoryConfig::from_name_servers(servers), provider)
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = config.timeout;
        options.attempts = config.attempts;
        options.cache_size = 0;
        options.preserve_intermediates = true;
        options.ndots = 0;
        options.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        options.max_active_requests = config.concurrency.max(32);
        let resolver = builder
            .build()
            .map_err(|err| anyhow::anyhow!("cannot build the resolver: {err}"))?;
        let per_server = config.nameservers.len().max(1) as u32;
        let limit = config.timeout * (config.attempts as u32 * per_server + 1);
        Ok(Dns { resolver, limit })
    }

    /// Asks for `name`'s A and AAAA records at once.
    pub async fn resolve(&self, name: &str) -> Resolution {
        let fqdn = format!("{name}.");
        let asked = tokio::time::timeout(self.limit, async {
            tokio::join!(
                self.resolver.lookup(fqdn.as_str(), RecordType::A),
                self.resolver.lookup(fqdn.as_str(), RecordType::AAAA)
            )
        })
        .await;
        let Ok((a, aaaa)) = asked else {
            return Resolution::Failed {
                failure: Failure::Timeout,
                detail: format!("no answer in {}", humantime::format_duration(self.limit)),
            };
        };
        let mut cnames = HashMap::new();
        let mut addresses = BTreeSet::new();
        // The first family's failure; it decides only if neither family
        // has an address (a server that refuses AAAA still resolves).
        let mut failed: Option<(Failure, String)> = None;
        for (family, lookup) in [("A", a), ("AAAA", aaaa)] {
            match lookup {
                Ok(lookup) => {
                    for record in lookup.answers() {
                        match &record.data {
                            RData::A(a) => {
                                addresses.insert(IpAddr::V4(a.0));
                            }
                            RData::AAAA(aaaa) => {
                                addresses.insert(IpAddr::V6(aaaa.0));
                            }
                            RData::CNAME(target) => {
                                cnames.insert(plain(&record.name.to_string()), plain(&target.0.to_string()));
                            }
                            _ => {}
                        }
                    }
                }
                Err(err) => {
                    if let Some(failure) = failure_of(&err) {
                        let detail = match failure {
                            Failure::NxDomain => "the name does not exist".to_owned(),
                            _ => format!("{family}: {err}"),
                        };
                        failed.get_or_insert((failure, detail));
                    }
                }
            }
        }
        if addresses.is_empty() {
            let (failure, detail) = failed.unwrap_or((Failure::NoAddresses, "no A or AAAA records".to_owned()));
            return Resolution::Failed { failure, detail };
        }
        Resolution::Resolved {
            chain: chain(name, &cnames),
            addresses,
        }
    }
}

/// The name and each CNAME target after it, as far as the records go.
fn chain(name: &str, cnames: &HashMap<String, String>) -> Vec<String> {
    let mut chain = vec![name.to_owned()];
    while let Some(next) = cnames.get(chain.last().expect("never empty")) {
        if chain.contains(next) || chain.len() > 16 {
            break;
        }
        chain.push(next.clone());
    }
    chain
}

fn plain(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// What a failed lookup means for the name; None when it only says the
/// name has no records of that type.
fn failure_of(err: &NetError) -> Option<Failure> {
    match err {
        NetError::Dns(DnsError::NoRecordsFound(no)) => match no.response_code {
            ResponseCode::NXDomain => Some(Failure::NxDomain),
            ResponseCode::NoError => None,
            ResponseCode::ServFail => Some(Failure::ServFail),
            ResponseCode::Refused => Some(Failure::Refused),
            _ => Some(Failure::Error),
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => Some(Failure::ServFail),
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => Some(Failure::Refused),
        NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => Some(Failure::NxDomain),
        NetError::Timeout => Some(Failure::Timeout),
        _ => Some(Failure::Error),
    }
}
