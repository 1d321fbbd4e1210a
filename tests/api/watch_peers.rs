//! The watch's peers for its tests, each real and on a loopback port: a
//! DNS server answering from a zone the test rewrites, an HTTP receiver
//! for the webhooks, and an SMTP sink for the mail.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// What the DNS server answers for a name.
#[derive(Clone, Debug)]
pub enum Entry {
    Addresses(Vec<&'static str>),
    Cname(&'static str),
    NxDomain,
    ServFail,
}

/// An authoritative DNS server over UDP for the names the test sets.
pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<HashMap<String, Entry>>>,
    task: JoinHandle<()>,
}

impl TestDns {
    pub async fn start() -> TestDns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone: Arc<Mutex<HashMap<String, Entry>>> = Arc::default();
        let answers = zone.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                let reply = answer(&query, &answers.lock().unwrap());
                let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
            }
        });
        TestDns { addr, zone, task }
    }

    pub fn set(&self, name: &str, entry: Entry) {
        self.zone.lock().unwrap().insert(name.to_owned(), entry);
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &Message, zone: &HashMap<String, Entry>) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    let Some(question) = query.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    reply.add_query(question.clone());
    let mut name = question.name.clone();
    for _ in 0..8 {
        let key = name.to_string().trim_end_matches('.').to_ascii_lowercase();
        match zone.get(&key) {
            Some(Entry::Cname(target)) => {
                let target = Name::from_str(&format!("{target}.")).unwrap();
                reply.add_answer(Record::from_rdata(name.clone(), 0, RData::CNAME(CNAME(target.clone()))));
                name = target;
            }
            Some(Entry::Addresses(addresses)) => {
                for address in addresses {
                    let rdata = match (address.parse::<IpAddr>().unwrap(), question.query_type) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
                        _ => continue,
                    };
                    reply.add_answer(Record::from_rdata(name.clone(), 0, rdata));
                }
                return reply;
            }
            Some(Entry::ServFail) => {
                reply.answers.clear();
                reply.metadata.response_code = ResponseCode::ServFail;
                return reply;
            }
            Some(Entry::NxDomain) | None => {
                reply.metadata.response_code = ResponseCode::NXDomain;
                return reply;
            }
        }
    }
    reply
}

/// One request the receiver took.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub query: String,
    pub body: serde_json::Value,
}

/// An HTTP server that keeps every POST, failing the first `fail_first`
/// with a 500, and answering the rest as a robot does (`errcode` 0).
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
        };
        let app = Router::new().route("/{*path}", post(take)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn at(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }
}

async fn take(
    State(receiver): State<Receiver>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    receiver.received.lock().unwrap().push(Received {
        path,
        query: query.unwrap_or_default(),
        body,
    });
    let failing = receiver
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": "try again" })),
        )
    } else {
        (
            StatusCode::OK,
            Json(serde_json::json!({ "errcode": 0, "errmsg": "ok" })),
        )
    }
}

/// An SMTP server that accepts every message and keeps it.
pub struct SmtpSink {
    pub addr: SocketAddr,
    messages: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let messages: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = messages.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                    let mut data: Option<String> = None;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Some(body) = &mut data {
                            if line == "." {
                                kept.lock().unwrap().push(std::mem::take(body));
                                data = None;
                                write.write_all(b"250 kept\r\n").await.unwrap();
                            } else {
                                body.push_str(&line);
                                body.push('\n');
                            }
                            continue;
                        }
                        let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" | "HELO" => b"250-sink\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n",
                            "AUTH" => b"235 accepted\r\n",
                            "DATA" => {
                                data = Some(String::new());
                                b"354 go on\r\n"
                            }
                            "QUIT" => {
                                write.write_all(b"221 bye\r\n").await.unwrap();
                                break;
                            }
                            _ => b"250 ok\r\n",
                        };
                        write.write_all(reply).await.unwrap();
                    }
                });
            }
        });
        SmtpSink { addr, messages }
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }
}
