//! PROXY protocol v2 headers, as sent to backends of services with `tcp_proxy` set to
//! `proxy_open` or `open`. Pure encoding and decoding.
//!
//! Besides the client's address (source) and the endpoint address it connected to
//! (destination), the header carries one vendor TLV of type 0xE3 (in the custom range
//! 0xE0-0xEF; not used by the big clouds) whose value is a list of sub-TLVs, each
//! `type: u8, length: u16 big-endian, value`:
//! - 0x01: the endpoint id (ASCII UUID)
//! - 0x02: the marker id (u32, big-endian)
//! - 0x03: the endpoint service id (ASCII UUID)

use std::net::{Ipv4Addr, SocketAddrV4};

pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
pub const TLV_VPCEP: u8 = 0xE3;
pub const SUB_ENDPOINT_ID: u8 = 0x01;
pub const SUB_MARKER_ID: u8 = 0x02;
pub const SUB_SERVICE_ID: u8 = 0x03;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub endpoint_id: String,
    pub marker_id: u32,
    pub service_id: String,
}

fn sub(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

/// Encodes a PROXY v2 `PROXY` command for TCP over IPv4 with the vpcep TLV.
pub fn encode(h: &Header) -> Vec<u8> {
    let ids = [h.endpoint_id.as_bytes(), h.service_id.as_bytes()];
    let tlv = 3 * 3 + 4 + ids.iter().map(|v| v.len()).sum::<usize>();
    let len = 12 + 3 + tlv;
    let mut out = Vec::with_capacity(16 + len);
    out.extend_from_slice(&SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    out.push(0x11); // AF_INET, STREAM
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&h.src.ip().octets());
    out.extend_from_slice(&h.dst.ip().octets());
    out.extend_from_slice(&h.src.port().to_be_bytes());
    out.extend_from_slice(&h.dst.port().to_be_bytes());
    out.push(TLV_VPCEP);
    out.extend_from_slice(&(tlv as u16).to_be_bytes());
    sub(&mut out, SUB_ENDPOINT_ID, ids[0]);
    sub(&mut out, SUB_MARKER_ID, &h.marker_id.to_be_bytes());
    sub(&mut out, SUB_SERVICE_ID, ids[1]);
    out
}

/// Rewrites the source address of an encoded header in place: everything else in an
/// endpoint's headers is the same for every session of one port, so the gateway encodes
/// it once and patches six bytes per session.
pub fn set_source(header: &mut [u8], src: SocketAddrV4) {
    header[16..20].copy_from_slice(&src.ip().octets());
    header[24..26].copy_from_slice(&src.port().to_be_bytes());
}

fn be16(b: &[u8]) -> usize {
    u16::from_be_bytes([b[0], b[1]]) as usize
}

/// Decodes a header from the start of `buf`: the header and its length, or `None` if
/// `buf` does not start with a complete, well-formed one.
pub fn decode(buf: &[u8]) -> Option<(Header, usize)> {
    if buf.len() < 16 || buf[..12] != SIGNATURE || buf[12] != 0x21 || buf[13] != 0x11 {
        return None;
    }
    let len = be16(&buf[14..16]);
    let body = buf.get(16..16 + len)?;
    if body.len() < 12 {
        return None;
    }
    let ip = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let src = SocketAddrV4::new(ip(&body[0..4]), be16(&body[8..10]) as u16);
    let dst = SocketAddrV4::new(ip(&body[4..8]), be16(&body[10..12]) as u16);
    let mut h = Header {
        src,
        dst,
        endpoint_id: String::new(),
        marker_id: 0,
        service_id: String::new(),
    };
    let mut rest = &body[12..];
    while rest.len() >= 3 {
        let (kind, l) = (rest[0], be16(&rest[1..3]));
        let value = rest.get(3..3 + l)?;
        if kind == TLV_VPCEP {
            let mut s = value;
            while s.len() >= 3 {
                let (k, n) = (s[0], be16(&s[1..3]));
                let v = s.get(3..3 + n)?;
                match k {
                    SUB_ENDPOINT_ID => h.endpoint_id = String::from_utf8_lossy(v).into_owned(),
                    SUB_MARKER_ID if n == 4 => {
                        h.marker_id = u32::from_be_bytes([v[0], v[1], v[2], v[3]])
                    }
                    SUB_SERVICE_ID => h.service_id = String::from_utf8_lossy(v).into_owned(),
                    _ => {}
                }
                s = &s[3 + n..];
            }
        }
        rest = &rest[3 + l..];
    }
    Some((h, 16 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = Header {
            src: "10.0.0.5:40000".parse().unwrap(),
            dst: "192.168.0.4:8080".parse().unwrap(),
            endpoint_id: "e0c1".into(),
            marker_id: 0x0100_0007,
            service_id: "s9".into(),
        };
        let bytes = encode(&h);
        assert_eq!(&bytes[..12], &SIGNATURE);
        assert_eq!(bytes[12], 0x21);
        let (back, n) = decode(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(n, bytes.len());
        // The fixed part, byte for byte: addresses then ports.
        assert_eq!(
            &bytes[16..28],
            &[10, 0, 0, 5, 192, 168, 0, 4, 0x9c, 0x40, 0x1f, 0x90]
        );
        let mut with_payload = bytes.clone();
        with_payload.extend_from_slice(b"GET /");
        assert_eq!(decode(&with_payload).unwrap().1, bytes.len());
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode(b"GET / HTTP/1.1\r\n\r\n").is_none());
    }

    #[test]
    fn a_new_source_makes_the_header_of_that_source() {
        let mut h = Header {
            src: "10.0.0.5:40000".parse().unwrap(),
            dst: "192.168.0.4:8080".parse().unwrap(),
            endpoint_id: "e0c1".into(),
            marker_id: 0x0100_0007,
            service_id: "s9".into(),
        };
        let mut bytes = encode(&h);
        h.src = "172.16.9.200:1".parse().unwrap();
        set_source(&mut bytes, h.src);
        assert_eq!(bytes, encode(&h));
        assert_eq!(decode(&bytes).unwrap().0, h);
    }
}
