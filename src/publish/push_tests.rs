//! Tests of push mode: TSIG settings and the serial read after a push.
use super::*;

#[test]
fn algorithms_and_secrets() {
    assert_eq!(algorithm("HMAC-SHA512."), Some(TsigAlgorithm::HmacSha512));
    assert_eq!(algorithm("hmac-md5"), None);
    assert_eq!(algorithm_name(&TsigAlgorithm::HmacSha384), "hmac-sha384");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k");
    std::fs::write(&f, "c2hvcnQ=\n").unwrap();
    assert!(read_secret(&f).unwrap_err().contains("shorter than 16"));
    std::fs::write(&f, "not base64!").unwrap();
    assert!(read_secret(&f).unwrap_err().contains("not a base64 secret"));
    std::fs::write(
        &f,
        format!("{}\n", data_encoding::BASE64.encode(&[7u8; 32])),
    )
    .unwrap();
    assert_eq!(read_secret(&f).unwrap(), vec![7u8; 32]);
}

/// A pushed zone's SOA serial is read without the push lock (a slow nameserver delays no
/// other push), and a serial read after an earlier push never replaces a later push's.
/// The provider API is a stand-in for Pebble's challenge test server (every request
/// answered 204); the nameserver answers each SOA query when the test says.
#[cfg(feature = "providers")]
#[tokio::test]
async fn the_serial_is_read_without_the_push_lock() {
    use hickory_proto::rr::rdata::{SOA, TXT};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", http.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = http.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let body = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + body {
                        break;
                    }
                }
                let _ = conn
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    let dns = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let zone = Name::from_ascii("example.com.").unwrap();
    let sink = Arc::new(PushSink::default());
    let settings = PushSettings {
        server: None,
        tsig: None,
        provider: Some(ProviderSettings {
            name: "pebble-challtestsrv".into(),
            token_file: None,
            api_url: Some(api_url),
        }),
        nameservers: vec![dns.local_addr().unwrap()],
        resolver: None,
    };
    sink.configure(vec![(zone.clone(), settings)])
        .await
        .unwrap();
    let push = |id: &str| {
        let sink = sink.clone();
        let change = Change::Set(
            crate::publish::RrsetKey::new(
                Name::from_ascii("_mta-sts.example.com.").unwrap(),
                RecordType::TXT,
                Source::Policy,
            ),
            Rrset {
                ttl: 300,
                data: vec![RData::TXT(TXT::new(vec![format!("v=STSv1; id={id}")]))],
                what: "test".into(),
            },
        );
        tokio::spawn(async move { sink.apply(vec![change]).await })
    };
    let soa_query = || async {
        let mut buf = [0u8; 512];
        let (n, from) = tokio::time::timeout(Duration::from_secs(10), dns.recv_from(&mut buf))
            .await
            .expect("an SOA query after the push")
            .unwrap();
        (Message::from_vec(&buf[..n]).unwrap(), from)
    };
    let answer = |(q, from): (Message, SocketAddr), serial: u32| {
        let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        r.add_query(q.queries[0].clone());
        let soa = SOA::new(zone.clone(), zone.clone(), serial, 3600, 600, 86400, 300);
        r.add_answer(Record::from_rdata(zone.clone(), 300, RData::SOA(soa)));
        let bytes = r.to_vec().unwrap();
        let dns = &dns;
        async move { dns.send_to(&bytes, from).await.unwrap() }
    };
    let first = push("1");
    let q1 = soa_query().await;
    // Pushed, its serial not answered yet: the push lock is free.
    let free = tokio::time::timeout(Duration::from_secs(2), sink.failures()).await;
    assert!(
        free.is_ok(),
        "the push lock is held while the serial is read"
    );
    let second = push("2");
    let q2 = soa_query().await;
    answer(q2, 43).await;
    let applied = second.await.unwrap().unwrap();
    assert!(applied.changed);
    assert_eq!(applied.serials.get(&zone), Some(&43));
    assert_eq!(sink.serial(&zone), Some(43));
    // The first push's serial, read before the second push was accepted, arrives last.
    answer(q1, 41).await;
    let applied = first.await.unwrap().unwrap();
    assert_eq!(
        applied.serials.get(&zone),
        Some(&41),
        "what the first push read"
    );
    assert_eq!(
        sink.serial(&zone),
        Some(43),
        "not replaced by an older serial"
    );
}
