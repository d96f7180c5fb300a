//! Rule fixtures: each rule's bytes, from a real trace in ../shared/traces
//! (named) or from the specification the rule cites.

extern crate std;

use super::*;

fn c() -> Classifier {
    Classifier::builtin().expect("the compiled-in rules parse")
}

fn h(len: u32, b: &[u8]) -> PayloadHead {
    PayloadHead::new(len, b)
}

const NONE: PayloadHead = PayloadHead::NONE;

/// (name, method) of a TCP (6) / UDP (17) flow.
fn lab(
    proto: u8,
    ports: (u16, u16),
    x: PayloadHead,
    y: PayloadHead,
) -> (&'static str, &'static str) {
    let cl = c();
    let l = cl.classify(proto, ports.0, ports.1, &x, &y);
    // Symmetric: the same label with the directions and ports swapped.
    let r = cl.classify(proto, ports.1, ports.0, &y, &x);
    assert_eq!(l, r, "direction-dependent label");
    (l.name, l.method.name())
}

#[test]
fn builtin_rules_parse_and_cover_the_issue_list() {
    let cl = c();
    assert!(cl.rules() > 80, "{} rules", cl.rules());
    let names: std::vec::Vec<&str> = cl.apps().map(|a| a.1).collect();
    for want in [
        "HTTP",
        "TLS",
        "SSH",
        "DNS",
        "QUIC",
        "SMTP",
        "IMAP",
        "POP3",
        "FTP_CONTROL",
        "SMB",
        "NTP",
        "DHCP",
        "SNMP",
        "SIP",
        "RTP",
        "RTCP",
        "RDP",
        "MySQL",
        "PostgreSQL",
        "Redis",
        "MQTT",
        "BitTorrent",
        "LDAP",
        "Kerberos",
        "NetBIOS",
        "MDNS",
        "LLMNR",
        "SSDP",
        "STUN",
        "OpenVPN",
        "WireGuard",
        "IPsec",
        "GRE",
    ] {
        assert!(names.contains(&want), "{want} missing");
    }
}

#[test]
fn parse_errors_name_the_line() {
    let e = Classifier::parse("app 1 X\npayload X tcp a=zz\n").unwrap_err();
    assert_eq!(e.line, 2);
    let e = Classifier::parse("port Y tcp 80\n").unwrap_err();
    assert_eq!(e.what, "application not declared by an app line");
    assert!(Classifier::parse("app 1 X\npayload X tcp a='toolong'\n").is_err());
    assert!(Classifier::parse("app 1 X\napp 1 Y\n").is_err());
    assert!(Classifier::parse("app 1 X\nport X tcp 99999\n").is_err());
    assert!(Classifier::parse("app 1 X\nproto X 47 extra\n").is_err());
}

#[test]
fn payload_head_keeps_the_first_payload_once() {
    let mut fp = FirstPayload::EMPTY;
    fp.note(0, &NONE);
    assert_eq!(fp.dir[0], NONE);
    fp.note(0, &h(10, b"GET /"));
    fp.note(0, &h(20, b"XXXX"));
    assert_eq!(fp.dir[0], h(10, b"GET "));
    assert_eq!(fp.dir[0].captured, 4);
    fp.note(1, &h(2, b"ab"));
    assert_eq!(fp.dir[1].captured, 2);
    // A snaplen cut: the size stays the IP-stated one.
    assert_eq!(h(1400, b"\x16").captured, 1);
}

// ---- fixtures from real traces (first 4 bytes and sizes read with tshark)

#[test]
fn http_from_zeek_wikipedia() {
    // zeek__wikipedia.pcap: "GET /wiki..." (a 1:n request) answered "HTTP/1.0 200".
    assert_eq!(
        lab(6, (51149, 80), h(464, b"GET "), h(1448, b"HTTP")),
        ("HTTP", "payload")
    );
}

#[test]
fn dns_from_zeek_wikipedia() {
    // zeek__wikipedia.pcap: query id 0x4e7b flags 0x0100, answer flags 0x8180.
    assert_eq!(
        lab(
            17,
            (53, 60712),
            h(42, &[0x4e, 0x7b, 0x81, 0x80]),
            h(36, &[0x4e, 0x7b, 0x01, 0x00])
        ),
        ("DNS", "payload")
    );
}

#[test]
fn ssh_from_suricata_icmp_and_ssh() {
    // suricata-verify__icmp_and_ssh.pcap: "SSH-2.0-OpenSSH..." both ways.
    assert_eq!(
        lab(6, (22, 41234), h(41, b"SSH-"), h(21, b"SSH-")),
        ("SSH", "payload")
    );
}

#[test]
fn tls_client_hello_and_server_hello() {
    // RFC 8446 s5.1: 16 03 01 <len> ClientHello; server 16 03 03.
    assert_eq!(
        lab(
            6,
            (50000, 443),
            h(517, &[0x16, 0x03, 0x01, 0x02]),
            h(1448, &[0x16, 0x03, 0x03, 0x00])
        ),
        ("TLS", "payload")
    );
    // SSLv2-compatible ClientHello (RFC 6101 app. E).
    assert_eq!(
        lab(6, (50000, 443), h(103, &[0x80, 0x65, 0x01, 0x03]), NONE),
        ("TLS", "payload")
    );
    // Not TLS on 443 but no payload: a port guess.
    assert_eq!(lab(6, (50000, 443), NONE, NONE), ("TLS", "port"));
}

#[test]
fn smtp_and_ftp_share_220_and_split_on_the_client_command() {
    // RFC 5321 s4.2 / RFC 959 s5.4 greetings; the client's first command decides.
    assert_eq!(
        lab(6, (25, 40000), h(80, b"220 "), h(20, b"EHLO")),
        ("SMTP", "payload")
    );
    assert_eq!(
        lab(6, (2121, 40000), h(80, b"220 "), h(12, b"USER")),
        ("FTP_CONTROL", "payload")
    );
    assert_eq!(
        lab(6, (21, 40000), h(80, b"220-"), NONE),
        ("FTP_CONTROL", "payload")
    );
    assert_eq!(
        lab(6, (587, 40000), h(80, b"220 "), NONE),
        ("SMTP", "payload")
    );
    // "220" elsewhere with no telling command: unknown.
    assert_eq!(
        lab(6, (4000, 40000), h(80, b"220 "), NONE),
        ("unknown", "unknown")
    );
}

#[test]
fn imap_pop3_redis() {
    assert_eq!(
        lab(6, (143, 40000), h(40, b"* OK"), h(20, b"a001")),
        ("IMAP", "payload")
    );
    assert_eq!(
        lab(6, (110, 40000), h(30, b"+OK "), h(11, b"USER")),
        ("POP3", "payload")
    );
    // RESP: "*1\r\n$4\r\nPING\r\n" answered "+PONG\r\n".
    assert_eq!(
        lab(6, (6379, 40000), h(7, b"+PON"), h(14, b"*1\r\n")),
        ("Redis", "payload")
    );
}

#[test]
fn smb_netbios_session() {
    // MS-SMB2 s2.1: 00 + 3-byte length 0x000068 + 4 = 108-byte segment.
    assert_eq!(
        lab(
            6,
            (445, 40000),
            h(108, &[0, 0, 0, 0x68]),
            h(210, &[0, 0, 0, 0xce])
        ),
        ("SMB", "payload")
    );
    // Wrong length: not SMB by payload, a port guess.
    assert_eq!(
        lab(6, (445, 40000), h(100, &[0, 0, 0, 0x68]), NONE),
        ("SMB", "port")
    );
    // RFC 1002 s4.3.2 SESSION REQUEST (68 bytes of names) -> POSITIVE RESPONSE.
    assert_eq!(
        lab(
            6,
            (139, 40000),
            h(72, &[0x81, 0, 0, 0x44]),
            h(4, &[0x82, 0, 0, 0])
        ),
        ("NetBIOS", "payload")
    );
}

#[test]
fn rdp_mysql_postgres_mqtt() {
    // MS-RDPBCGR 4.1.1 sample: 03 00 00 2c (44 bytes) X.224 CR.
    assert_eq!(
        lab(
            6,
            (3389, 40000),
            h(44, &[3, 0, 0, 0x2c]),
            h(19, &[3, 0, 0, 0x13])
        ),
        ("RDP", "payload")
    );
    // MySQL greeting: length 0x4a (74) + seq 0 = 78 bytes; response seq 1.
    assert_eq!(
        lab(
            6,
            (13306, 40000),
            h(78, &[0x4a, 0, 0, 0]),
            h(68, &[0x40, 0, 0, 1])
        ),
        ("MySQL", "payload")
    );
    // PostgreSQL SSLRequest (Int32 8, 80877103) answered 'N'.
    assert_eq!(
        lab(6, (5432, 40000), h(8, &[0, 0, 0, 8]), h(1, b"N")),
        ("PostgreSQL", "payload")
    );
    // MQTT 3.1.1 CONNECT: 10 0c 00 04 'MQTT'...; CONNACK 20 02 00 00.
    assert_eq!(
        lab(
            6,
            (1883, 40000),
            h(14, &[0x10, 0x0c, 0, 4]),
            h(4, &[0x20, 2, 0, 0])
        ),
        ("MQTT", "payload")
    );
}

#[test]
fn bittorrent_ldap_kerberos_telnet() {
    assert_eq!(
        lab(6, (6881, 40000), h(68, b"\x13Bit"), h(68, b"\x13Bit")),
        ("BitTorrent", "payload")
    );
    // RFC 4511 bind request: 30 0c 02 01 01 60 07 ...
    assert_eq!(
        lab(
            6,
            (389, 40000),
            h(14, &[0x30, 0x0c, 2, 1]),
            h(14, &[0x30, 0x0c, 2, 1])
        ),
        ("LDAP", "payload")
    );
    // RFC 4120 s7.2.2: record mark 0x000000c8 + 200-byte AS-REQ.
    assert_eq!(
        lab(6, (88, 40000), h(204, &[0, 0, 0, 0xc8]), NONE),
        ("Kerberos", "payload")
    );
    assert_eq!(
        lab(
            17,
            (88, 40000),
            h(200, &[0x6a, 0x81, 0xc5, 0x30]),
            h(100, &[0x7e, 0x62, 0x30, 0x60])
        ),
        ("Kerberos", "payload")
    );
    // RFC 854: IAC DO (0xfd) option 0x18.
    assert_eq!(
        lab(6, (23, 40000), h(12, &[0xff, 0xfd, 0x18, 0xff]), NONE),
        ("Telnet", "payload")
    );
}

#[test]
fn dns_tcp_mdns_llmnr_netbios_udp() {
    assert_eq!(
        lab(
            6,
            (53, 40000),
            h(30, &[0, 28, 0x12, 0x34]),
            h(46, &[0, 44, 0x12, 0x34])
        ),
        ("DNS", "payload")
    );
    assert_eq!(
        lab(17, (5353, 5353), h(40, &[0, 0, 0, 0]), NONE),
        ("MDNS", "payload")
    );
    assert_eq!(
        lab(17, (5355, 40000), h(30, &[0x12, 0x34, 0, 0]), NONE),
        ("LLMNR", "payload")
    );
    // RFC 1002 s4.2.12 name query, flags 0x0110.
    assert_eq!(
        lab(17, (137, 137), h(50, &[0x80, 0x01, 0x01, 0x10]), NONE),
        ("NetBIOS", "payload")
    );
    // s4.4.1 DIRECT_GROUP datagram (0x11).
    assert_eq!(
        lab(17, (138, 138), h(201, &[0x11, 0x02, 0x12, 0x34]), NONE),
        ("NetBIOS", "payload")
    );
}

#[test]
fn dhcp_ntp_snmp() {
    // RFC 2131: DISCOVER 01 01 06 00, 300 bytes; OFFER 02 01 06 00.
    assert_eq!(
        lab(17, (68, 67), h(300, &[1, 1, 6, 0]), h(300, &[2, 1, 6, 0])),
        ("DHCP", "payload")
    );
    // RFC 5905: 0x23 = LI 0, VN 4, mode 3; answer 0x24, 48 bytes each.
    assert_eq!(
        lab(
            17,
            (123, 40000),
            h(48, &[0x23, 0, 6, 0xec]),
            h(48, &[0x24, 2, 6, 0xec])
        ),
        ("NTP", "payload")
    );
    // Too short for NTP: a port guess.
    assert_eq!(
        lab(17, (123, 40000), h(12, &[0x23, 0, 6, 0xec]), NONE),
        ("NTP", "port")
    );
    // RFC 3416 GetRequest, v2c: 30 29 02 01 01.
    assert_eq!(
        lab(
            17,
            (161, 40000),
            h(43, &[0x30, 0x29, 2, 1]),
            h(50, &[0x30, 0x30, 2, 1])
        ),
        ("SNMP", "payload")
    );
}

#[test]
fn sip_ssdp_rtp_rtcp_stun() {
    assert_eq!(
        lab(17, (5060, 5060), h(500, b"INVI"), h(400, b"SIP/")),
        ("SIP", "payload")
    );
    assert_eq!(
        lab(6, (5060, 40000), h(300, b"OPTI"), NONE),
        ("SIP", "payload")
    );
    // OPTIONS elsewhere over TCP is HTTP (RFC 9110 s9.3.7).
    assert_eq!(
        lab(6, (8080, 40000), h(300, b"OPTI"), NONE),
        ("HTTP", "payload")
    );
    assert_eq!(
        lab(17, (1900, 40000), h(120, b"M-SE"), NONE),
        ("SSDP", "payload")
    );
    assert_eq!(
        lab(17, (1900, 40000), h(300, b"NOTI"), NONE),
        ("SSDP", "payload")
    );
    // RFC 3550: 80 00 (PCMU) / 80 c8 (SR).
    assert_eq!(
        lab(
            17,
            (40002, 40004),
            h(172, &[0x80, 0, 0x12, 0x34]),
            h(172, &[0x80, 0x80, 0, 1])
        ),
        ("RTP", "payload")
    );
    assert_eq!(
        lab(17, (40003, 40005), h(52, &[0x80, 0xc8, 0, 6]), NONE),
        ("RTCP", "payload")
    );
    // RFC 5769 s2.1 sample request: 00 01 00 58 (88 + 20 = 108 bytes).
    assert_eq!(
        lab(
            17,
            (3478, 40000),
            h(108, &[0, 1, 0, 0x58]),
            h(80, &[1, 1, 0, 0x3c])
        ),
        ("STUN", "payload")
    );
}

#[test]
fn quic_wireguard_openvpn_ipsec() {
    // RFC 9001 A.2 client Initial: c0 00 00 00 01, padded to 1200.
    assert_eq!(
        lab(
            17,
            (443, 40000),
            h(1200, &[0xc0, 0, 0, 0]),
            h(1200, &[0xc1, 0, 0, 0])
        ),
        ("QUIC", "payload")
    );
    // An Initial below 1200 bytes is not QUIC by payload; port guess on 443.
    assert_eq!(
        lab(17, (443, 40000), h(500, &[0xc0, 0, 0, 0]), NONE),
        ("QUIC", "port")
    );
    // WireGuard: 148-byte initiation, 92-byte response.
    assert_eq!(
        lab(
            17,
            (51000, 40000),
            h(148, &[1, 0, 0, 0]),
            h(92, &[2, 0, 0, 0])
        ),
        ("WireGuard", "payload")
    );
    // OpenVPN: HARD_RESET_CLIENT_V2 (0x38) / SERVER_V2 (0x40), 14 bytes.
    assert_eq!(
        lab(
            17,
            (1194, 40000),
            h(14, &[0x38, 1, 2, 3]),
            h(26, &[0x40, 4, 5, 6])
        ),
        ("OpenVPN", "payload")
    );
    assert_eq!(
        lab(
            6,
            (443, 40000),
            h(16, &[0, 14, 0x38, 1]),
            h(28, &[0, 26, 0x40, 1])
        ),
        ("OpenVPN", "payload")
    );
    // RFC 3948: non-ESP marker then IKE on 4500.
    assert_eq!(
        lab(17, (4500, 4500), h(300, &[0, 0, 0, 0]), NONE),
        ("IPsec", "payload")
    );
    assert_eq!(
        lab(17, (500, 500), h(300, &[0x12, 0x34, 0, 0]), NONE),
        ("IPsec", "port")
    );
}

#[test]
fn bittorrent_dht() {
    // BEP 5 ping query: d1:ad2:id20:...
    assert_eq!(
        lab(17, (6881, 40000), h(56, b"d1:a"), h(47, b"d1:r")),
        ("BitTorrent", "payload")
    );
}

#[test]
fn protocols_without_ports() {
    let cl = c();
    for (p, name) in [
        (47, "GRE"),
        (50, "IPsec"),
        (51, "IPsec"),
        (1, "ICMP"),
        (58, "ICMPV6"),
        (132, "SCTP"),
        (89, "OSPF"),
    ] {
        let l = cl.classify(p, 0, 0, &NONE, &NONE);
        assert_eq!((l.name, l.method), (name, Method::Proto), "proto {p}");
        assert_eq!(l.selector, u16::from(p));
    }
    assert_eq!(cl.classify(253, 0, 0, &NONE, &NONE), Label::UNKNOWN);
}

#[test]
fn unknown_stays_unknown() {
    assert_eq!(
        lab(6, (40001, 40002), h(100, b"zzzz"), h(100, b"yyyy")),
        ("unknown", "unknown")
    );
    assert_eq!(lab(17, (40001, 40002), NONE, NONE), ("unknown", "unknown"));
}

#[test]
fn application_id_follows_rfc_6759() {
    let cl = c();
    let mut b = [0u8; 3];
    let l = cl.classify(6, 80, 40000, &h(100, b"GET "), &NONE);
    assert_eq!(l.application_id(&mut b), 3);
    assert_eq!(b, [engine::USER_DEFINED, 0, 1]);
    let l = cl.classify(6, 40000, 22, &NONE, &NONE);
    assert_eq!(l.application_id(&mut b), 3);
    assert_eq!(b, [engine::IANA_L4, 0, 22]);
    let l = cl.classify(47, 0, 0, &NONE, &NONE);
    assert_eq!(l.application_id(&mut b), 2);
    assert_eq!(&b[..2], &[engine::IANA_L3, 47]);
    assert_eq!(Label::UNKNOWN.application_id(&mut b), 0);
}
