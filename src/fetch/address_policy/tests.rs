use super::*;

fn category(ip: &str) -> Category {
    Category::of(ip.parse().unwrap())
}

#[test]
fn every_category_and_the_edges_of_its_ranges() {
    let cases = [
        // Never allowed.
        ("0.0.0.0", Category::Never("unspecified")),
        ("0.255.255.255", Category::Never("unspecified")),
        ("::", Category::Never("unspecified")),
        ("224.0.0.1", Category::Never("multicast")),
        ("239.255.255.255", Category::Never("multicast")),
        ("ff02::1", Category::Never("multicast")),
        ("255.255.255.255", Category::Never("broadcast")),
        ("240.0.0.1", Category::Never("reserved")),
        // Metadata wins over link-local and private.
        ("169.254.169.254", Category::Metadata),
        ("169.254.170.2", Category::Metadata),
        ("100.100.100.200", Category::Metadata),
        ("fd00:ec2::254", Category::Metadata),
        // Loopback.
        ("127.0.0.1", Category::Loopback),
        ("127.255.255.254", Category::Loopback),
        ("::1", Category::Loopback),
        // Link-local.
        ("169.254.0.0", Category::LinkLocal),
        ("169.254.169.253", Category::LinkLocal),
        ("169.254.255.255", Category::LinkLocal),
        ("fe80::1", Category::LinkLocal),
        ("febf:ffff::1", Category::LinkLocal),
        // Private, at both ends of each range.
        ("10.0.0.0", Category::Private),
        ("10.255.255.255", Category::Private),
        ("172.16.0.0", Category::Private),
        ("172.31.255.255", Category::Private),
        ("192.168.0.0", Category::Private),
        ("192.168.255.255", Category::Private),
        ("100.64.0.0", Category::Private),
        ("100.127.255.255", Category::Private),
        ("fc00::1", Category::Private),
        ("fdff:ffff::1", Category::Private),
        ("fd00:ec2::253", Category::Private),
        ("fec0::1", Category::Private),
        // Just outside them: public.
        ("9.255.255.255", Category::Public),
        ("11.0.0.0", Category::Public),
        ("172.15.255.255", Category::Public),
        ("172.32.0.0", Category::Public),
        ("192.167.255.255", Category::Public),
        ("192.169.0.0", Category::Public),
        ("100.63.255.255", Category::Public),
        ("100.128.0.0", Category::Public),
        ("126.255.255.255", Category::Public),
        ("128.0.0.0", Category::Public),
        ("169.253.255.255", Category::Public),
        ("169.255.0.0", Category::Public),
        ("223.255.255.255", Category::Public),
        ("1.1.1.1", Category::Public),
        ("192.0.2.2", Category::Public),
        ("2606:4700::1111", Category::Public),
        ("fbff::1", Category::Public),
        ("fe00::1", Category::Public),
        ("::1:0:0:0:1", Category::Public),
        ("64:ff9a:ffff:ffff:ffff:ffff:7f00:1", Category::Public),
        ("64:ff9b:2::7f00:1", Category::Public),
        ("::fffe:0:7f00:1", Category::Public),
    ];
    for (ip, expected) in cases {
        assert_eq!(category(ip), expected, "{ip}");
    }
}

#[test]
fn ipv4_mapped_and_nat64_addresses_are_judged_as_their_ipv4_address() {
    assert_eq!(category("::ffff:127.0.0.1"), Category::Loopback);
    assert_eq!(category("::ffff:169.254.169.254"), Category::Metadata);
    assert_eq!(category("::ffff:10.1.2.3"), Category::Private);
    assert_eq!(category("::ffff:0.0.0.0"), Category::Never("unspecified"));
    assert_eq!(category("::ffff:8.8.8.8"), Category::Public);
    assert_eq!(category("64:ff9b::a9fe:a9fe"), Category::Metadata);
    assert_eq!(category("64:ff9b::7f00:1"), Category::Loopback);
    assert_eq!(category("64:ff9b::808:808"), Category::Public);
    // `::1` is loopback and `::` unspecified in their own right, not 0.0.0.1 and 0.0.0.0.
    assert_eq!(category("::1"), Category::Loopback);
    assert_eq!(category("::"), Category::Never("unspecified"));
}

/// The other forms that carry an IPv4 address, at the edges of their prefixes: each is judged
/// as the address it carries, whichever category that is.
#[test]
fn compatible_siit_and_local_use_nat64_addresses_are_judged_as_their_ipv4_address() {
    let cases = [
        // IPv4-compatible ::/96, from just above ::1 to its end.
        ("::2", Category::Never("unspecified")),
        ("::127.0.0.1", Category::Loopback),
        ("::169.254.169.254", Category::Metadata),
        ("::10.0.0.1", Category::Private),
        ("::169.254.1.1", Category::LinkLocal),
        ("::8.8.8.8", Category::Public),
        ("::255.255.255.255", Category::Never("broadcast")),
        // SIIT ::ffff:0:0/96.
        ("::ffff:0:127.0.0.1", Category::Loopback),
        ("::ffff:0:169.254.169.254", Category::Metadata),
        ("::ffff:0:192.168.0.1", Category::Private),
        ("::ffff:0:8.8.8.8", Category::Public),
        // Local-use NAT64 64:ff9b:1::/48, first and last addresses of the prefix.
        ("64:ff9b:1::7f00:1", Category::Loopback),
        ("64:ff9b:1::a9fe:a9fe", Category::Metadata),
        ("64:ff9b:1:ffff:ffff:ffff:a00:1", Category::Private),
        ("64:ff9b:1::808:808", Category::Public),
    ];
    for (ip, expected) in cases {
        assert_eq!(category(ip), expected, "{ip}");
    }
    let denied = AddressPolicy {
        allow_loopback: false,
        ..AddressPolicy::default()
    };
    for ip in ["::127.0.0.1", "::ffff:0:127.0.0.1", "64:ff9b:1::7f00:1"] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        assert!(!denied.allows(ip), "{ip}");
    }
}

#[test]
fn the_default_denies_link_local_and_metadata_only() {
    let policy = AddressPolicy::default();
    for ip in [
        "127.0.0.1",
        "::1",
        "10.0.0.1",
        "192.168.1.1",
        "8.8.8.8",
        "fd12::1",
    ] {
        assert!(policy.allows(ip.parse().unwrap()), "{ip}");
    }
    for ip in [
        "169.254.1.1",
        "fe80::1",
        "169.254.169.254",
        "fd00:ec2::254",
        "0.0.0.0",
    ] {
        assert!(!policy.allows(ip.parse().unwrap()), "{ip}");
    }
}

#[test]
fn each_setting_opens_its_category_only() {
    let closed = AddressPolicy {
        allow_loopback: false,
        allow_private: false,
        allow_link_local: false,
        allow_metadata: false,
    };
    let ips = [
        "127.0.0.1",
        "10.0.0.1",
        "169.254.1.1",
        "169.254.169.254",
        "224.0.0.1",
    ];
    let allowed = |policy: AddressPolicy| -> Vec<bool> {
        ips.iter()
            .map(|ip| policy.allows(ip.parse().unwrap()))
            .collect()
    };
    assert_eq!(allowed(closed), [false; 5]);
    let loopback = AddressPolicy {
        allow_loopback: true,
        ..closed
    };
    assert_eq!(allowed(loopback), [true, false, false, false, false]);
    let private = AddressPolicy {
        allow_private: true,
        ..closed
    };
    assert_eq!(allowed(private), [false, true, false, false, false]);
    let link_local = AddressPolicy {
        allow_link_local: true,
        ..closed
    };
    assert_eq!(allowed(link_local), [false, false, true, false, false]);
    let metadata = AddressPolicy {
        allow_metadata: true,
        ..closed
    };
    assert_eq!(allowed(metadata), [false, false, false, true, false]);
}

#[test]
fn a_denial_names_the_address_and_the_setting_that_allows_it() {
    let policy = AddressPolicy::default();
    let url = url::Url::parse("http://169.254.169.254/latest/meta-data/").unwrap();
    let denied = policy.check_url(&url).unwrap_err();
    assert_eq!(
        denied.to_string(),
        "169.254.169.254 is a cloud metadata address; connecting to it is denied \
         (set allow_metadata = true to allow it)"
    );
    let url = url::Url::parse("http://[fe80::1]:8080/x").unwrap();
    assert!(
        policy
            .check_url(&url)
            .unwrap_err()
            .to_string()
            .contains("allow_link_local")
    );
    let url = url::Url::parse("http://0.0.0.0/").unwrap();
    assert!(
        policy
            .check_url(&url)
            .unwrap_err()
            .to_string()
            .contains("never")
    );
    // Numeric forms are normalised by the URL parser: 2130706433 is 127.0.0.1.
    let strict = AddressPolicy {
        allow_loopback: false,
        ..policy
    };
    let url = url::Url::parse("http://2130706433/").unwrap();
    assert_eq!(
        strict.check_url(&url).unwrap_err().category,
        Category::Loopback
    );
    // Names pass here; the resolver judges them.
    let url = url::Url::parse("http://localhost/").unwrap();
    assert!(strict.check_url(&url).is_ok());
}

#[tokio::test]
async fn the_resolver_drops_denied_addresses_and_fails_when_none_remain() {
    use reqwest::dns::Resolve;
    let strict = AddressPolicy {
        allow_loopback: false,
        ..AddressPolicy::default()
    };
    let resolver = PolicyResolver::new(strict, Vec::new());
    let err = match resolver.resolve("localhost".parse().unwrap()).await {
        Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
        Err(err) => err,
    };
    let denied = denied_cause(err.as_ref()).expect("a denial");
    assert_eq!(denied.host, "localhost");
    assert_eq!(denied.category, Category::Loopback);
    assert!(
        denied.to_string().contains("localhost resolves to"),
        "{denied}"
    );
    assert!(denied.to_string().contains("allow_loopback"), "{denied}");
    // The default allows loopback.
    let open = PolicyResolver::new(AddressPolicy::default(), Vec::new());
    let addrs: Vec<_> = open
        .resolve("localhost".parse().unwrap())
        .await
        .unwrap()
        .collect();
    assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    // A trusted name (the daemon's proxy) is not judged.
    let trusting = PolicyResolver::new(strict, vec!["LocalHost".into()]);
    assert!(trusting.resolve("localhost".parse().unwrap()).await.is_ok());
    // IP literals handed to the resolver (socks) are judged too.
    let literal = resolver.resolve("127.0.0.1".parse().unwrap()).await;
    assert!(literal.is_err());
}
