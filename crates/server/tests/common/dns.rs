//! A stand-in DNS server on the test's loopback: it answers TXT questions
//! from a table the test fills (any other name: NXDOMAIN), so custom-domain
//! verification is tested without sending a packet anywhere else.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{RData, Record, RecordType};

/// TXT records by name (no trailing dot), and the questions asked.
#[derive(Debug, Default)]
pub struct Zone {
    pub txt: Mutex<HashMap<String, Vec<String>>>,
    pub asked: Mutex<Vec<String>>,
}

impl Zone {
    pub fn set_txt(&self, name: &str, values: &[&str]) {
        self.txt.lock().expect("zone").insert(
            name.to_string(),
            values.iter().map(|v| v.to_string()).collect(),
        );
    }
}

/// Starts the server on 127.0.0.1 (UDP); its address and zone.
pub async fn start() -> (SocketAddr, Arc<Zone>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind dns");
    let addr = socket.local_addr().expect("dns addr");
    assert!(addr.ip().is_loopback(), "the stand-in DNS must be local");
    let zone = Arc::new(Zone::default());
    let z = zone.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::new();
            resp.set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_op_code(query.op_code())
                .set_recursion_desired(query.recursion_desired())
                .set_recursion_available(true)
                .set_authoritative(true);
            resp.add_queries(query.queries().to_vec());
            for q in query.queries() {
                let name = q.name().to_string();
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                z.asked.lock().expect("asked").push(name.clone());
                let values = z.txt.lock().expect("zone").get(&name).cloned();
                match values {
                    Some(vals) if q.query_type() == RecordType::TXT => {
                        for v in vals {
                            resp.add_answer(Record::from_rdata(
                                q.name().clone(),
                                1,
                                RData::TXT(TXT::new(vec![v])),
                            ));
                        }
                    }
                    _ => {
                        resp.set_response_code(ResponseCode::NXDomain);
                    }
                }
            }
            if let Ok(bytes) = resp.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    (addr, zone)
}
