//! Test support shared by the library's tests and the integration tests: making the
//! bucket and container of the object storage emulators (moto's S3 server takes unsigned
//! requests; Azurite wants a Shared Key signature, which object_store cannot make), with
//! one plain HTTP/1.1 request each (the emulators listen on this machine, without TLS).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Makes `bucket` in the S3 emulator at `endpoint` (there already is fine).
pub fn create_bucket(endpoint: &str, bucket: &str) -> Result<(), String> {
    let (status, body) = http(&format!("{endpoint}/{bucket}"), "PUT", &[], "")?;
    match status {
        200 | 409 => Ok(()),
        _ => Err(format!("creating bucket {bucket}: HTTP {status}: {body}")),
    }
}

/// Makes `container` in the Azurite account `account` at `endpoint` (its account URL),
/// signed with the account key `key` (there already is fine).
pub fn create_container(
    endpoint: &str,
    account: &str,
    key: &str,
    container: &str,
) -> Result<(), String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let secret = b64
        .decode(key)
        .map_err(|e| format!("AZURE_STORAGE_ACCOUNT_KEY is not base64: {e}"))?;
    let url = format!("{endpoint}/{container}?restype=container");
    let path = url::Url::parse(&url)
        .map_err(|e| e.to_string())?
        .path()
        .to_string();
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{account}{path}\nrestype:container"
    );
    let signature = b64.encode(hmac_sha256(&secret, to_sign.as_bytes()));
    let headers = [
        ("x-ms-date", date.as_str()),
        ("x-ms-version", version),
        ("Authorization", &format!("SharedKey {account}:{signature}")),
    ];
    let (status, body) = http(&url, "PUT", &headers, "")?;
    match status {
        201 | 409 => Ok(()),
        _ => Err(format!(
            "creating container {container}: HTTP {status}: {body}"
        )),
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// One HTTP/1.1 request (no TLS: emulators on this machine); status and body.
pub fn http(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), String> {
    let u = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let host = u.host_str().ok_or("no host")?;
    let port = u.port_or_known_default().ok_or("no port")?;
    let mut s = TcpStream::connect((host, port)).map_err(|e| format!("{url}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let target = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {answer:?}"))?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}
