//! Which network addresses downloads may connect to (the SSRF policy).
//!
//! A daemon that fetches URLs its clients name can be made to reach what only it can reach:
//! the cloud's metadata service (credentials), its own loopback services, the private network.
//! Every address a download connects to is judged here, in one of two places:
//! - a host name goes through [`PolicyResolver`], set on every download client: denied
//!   addresses are dropped from the answer, so a connection only ever goes to an address that
//!   was judged (no second lookup an attacker's DNS could answer differently);
//! - an IP literal in a URL never reaches a resolver, so [`AddressPolicy::check_url`] judges
//!   it before each request and on every redirect hop (`http::get_following`).
//!
//! An address falls in exactly one [`Category`], tried in this order: the ones never allowed
//! (unspecified, multicast, broadcast, reserved), metadata, loopback, link-local, private,
//! public. So 169.254.169.254 is metadata (not link-local) and fd00:ec2::254 is metadata (not
//! private): allowing link-local or private addresses never opens the metadata service.
//! An IPv6 address that carries an IPv4 one — mapped `::ffff:a.b.c.d`, compatible
//! `::a.b.c.d`, SIIT `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and the local-use NAT64
//! prefix `64:ff9b:1::/48` — is judged as the IPv4 address it carries.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name as HyperName;

/// Cloud metadata services (IPv4): AWS, GCP, Azure, OpenStack, Oracle and others at
/// 169.254.169.254; the AWS ECS task and EKS pod identity endpoints; Alibaba Cloud; Oracle's
/// legacy address.
const METADATA_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(169, 254, 170, 23),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];

/// Cloud metadata services (IPv6): the AWS instance metadata service and EKS pod identity.
const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23),
];

/// The IPv4 address an IPv6 address carries in its last 32 bits, for the forms that reach
/// an IPv4 host: IPv4-compatible `::a.b.c.d` (deprecated, but a stack may still route it;
/// `::` and `::1` are themselves), SIIT `::ffff:0:a.b.c.d` (RFC 6145), the well-known NAT64
/// prefix `64:ff9b::/96` (RFC 6052) and the local-use NAT64 prefix `64:ff9b:1::/48`
/// (RFC 8215). For the local-use prefix the address is taken from the last 32 bits, as with a
/// /96 translator prefix inside it, the usual deployment.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    let carried = match segments {
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => false,
        [0, 0, 0, 0, 0, 0, ..] | [0, 0, 0, 0, 0xffff, 0, ..] => true,
        [0x64, 0xff9b, 0, 0, 0, 0, ..] | [0x64, 0xff9b, 1, ..] => true,
        _ => false,
    };
    let [.., hi, lo] = segments;
    carried.then(|| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)))
}

/// What kind of address an IP is, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Anything not below: allowed.
    Public,
    /// 127.0.0.0/8, ::1 (`allow_loopback`).
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10 (carrier-grade NAT, also used by overlay
    /// networks), fc00::/7 (unique local), fec0::/10 (deprecated site-local)
    /// (`allow_private`).
    Private,
    /// 169.254/16, fe80::/10, except the metadata addresses (`allow_link_local`).
    LinkLocal,
    /// Cloud metadata services ([`METADATA_V4`], [`METADATA_V6`]) (`allow_metadata`).
    Metadata,
    /// Never a place to download from: unspecified (0.0.0.0/8, ::), multicast (224/4,
    /// ff00::/8), broadcast (255.255.255.255), reserved (240/4).
    Never(&'static str),
}

impl Category {
    /// Classifies `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => Self::of_v6(v6),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Self {
        let [a, b, ..] = ip.octets();
        if a == 0 {
            Self::Never("unspecified")
        } else if ip.is_broadcast() {
            Self::Never("broadcast")
        } else if ip.is_multicast() {
            Self::Never("multicast")
        } else if a >= 240 {
            Self::Never("reserved")
        } else if METADATA_V4.contains(&ip) {
            Self::Metadata
        } else if ip.is_loopback() {
            Self::Loopback
        } else if ip.is_link_local() {
            Self::LinkLocal
        } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
            Self::Private
        } else {
            Self::Public
        }
    }

    fn of_v6(ip: Ipv6Addr) -> Self {
        if let Some(v4) = ip.to_ipv4_mapped() {
            return Self::of_v4(v4);
        }
        if let Some(v4) = embedded_v4(ip) {
            return Self::of_v4(v4);
        }
        let first = ip.segments()[0];
        if ip.is_unspecified() {
            Self::Never("unspecified")
        } else if ip.is_multicast() {
            Self::Never("multicast")
        } else if METADATA_V6.contains(&ip) {
            Self::Metadata
        } else if ip.is_loopback() {
            Self::Loopback
        } else if first & 0xffc0 == 0xfe80 {
            Self::LinkLocal
        } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
            Self::Private
        } else {
            Self::Public
        }
    }

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::Metadata => "cloud metadata",
            Self::Never(name) => name,
        }
    }

    /// The setting that allows this category, if one does.
    pub fn setting(self) -> Option<&'static str> {
        match self {
            Self::Loopback => Some("allow_loopback"),
            Self::Private => Some("allow_private"),
            Self::LinkLocal => Some("allow_link_local"),
            Self::Metadata => Some("allow_metadata"),
            Self::Public | Self::Never(_) => None,
        }
    }
}

/// Which categories of address downloads may connect to. The default denies link-local and
/// metadata addresses and allows loopback, private and public ones: a daemon on a laptop or a
/// LAN downloads from the machines around it, while the cloud's credentials stay out of reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_loopback: bool,
    pub allow_private: bool,
    pub allow_link_local: bool,
    pub allow_metadata: bool,
}

impl Default for AddressPolicy {
    fn default() -> Self {
        Self {
            allow_loopback: true,
            allow_private: true,
            allow_link_local: false,
            allow_metadata: false,
        }
    }
}

impl AddressPolicy {
    /// Whether `ip` may be connected to.
    pub fn allows(&self, ip: IpAddr) -> bool {
        match Category::of(ip) {
            Category::Public => true,
            Category::Loopback => self.allow_loopback,
            Category::Private => self.allow_private,
            Category::LinkLocal => self.allow_link_local,
            Category::Metadata => self.allow_metadata,
            Category::Never(_) => false,
        }
    }

    /// Judges `ip`, reached as `host`.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Denied> {
        if self.allows(ip) {
            return Ok(());
        }
        Err(Denied {
            host: host.to_owned(),
            address: ip,
            category: Category::of(ip),
        })
    }

    /// Judges a URL whose host is an IP literal; a host name passes (the resolver judges
    /// the addresses it resolves to).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Denied> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(&ip.to_string(), IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(&format!("[{ip}]"), IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) | None => Ok(()),
        }
    }
}

/// A connection the policy refused: which host, which address, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The host as the URL names it (a name, or the literal).
    pub host: String,
    /// The address refused (for a name, the first of those it resolved to).
    pub address: IpAddr,
    pub category: Category,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            host,
            address,
            category,
        } = self;
        let literal = host.trim_matches(['[', ']']) == address.to_string();
        if literal {
            write!(f, "{address} is a {} address", category.name())?;
        } else {
            write!(
                f,
                "{host} resolves to {address}, a {} address",
                category.name()
            )?;
        }
        match category.setting() {
            Some(setting) => write!(
                f,
                "; connecting to it is denied (set {setting} = true to allow it)"
            ),
            None => f.write_str("; haul never connects to it"),
        }
    }
}

impl std::error::Error for Denied {}

/// The denial in an error's cause chain, if there is one.
pub fn denied_cause<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Denied> {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(denied) = err.downcast_ref::<Denied>() {
            return Some(denied);
        }
        cause = err.source();
    }
    None
}

/// A DNS resolver that keeps only the addresses the policy allows. It is set on every
/// download client, so it also judges the names of mirrors, redirect targets, re-resolved
/// links, the target of a `socks5://` proxy (resolved here), and a job's own proxy.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: AddressPolicy,
    /// Host names resolved without judgement: the daemon's own proxy, which the operator
    /// chose (a proxy on loopback is common even where downloads may not go there). The
    /// resolver sees only the name, so a target of the same name is judged elsewhere
    /// (`http::TrustedProxy`).
    trusted: Arc<[String]>,
}

impl PolicyResolver {
    /// A resolver for `policy`; `trusted` names hosts it does not judge.
    pub fn new(policy: AddressPolicy, trusted: Vec<String>) -> Self {
        Self {
            policy,
            trusted: trusted.into(),
        }
    }

    /// The addresses of `name` the policy allows (all of them for a trusted name).
    fn lookup_name(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static {
        let trusted = self
            .trusted
            .iter()
            .any(|host| name.eq_ignore_ascii_case(host));
        Self::lookup(self.policy, trusted, name.to_owned())
    }

    async fn lookup(
        policy: AddressPolicy,
        trusted: bool,
        name: String,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        // reqwest's socks connector hands IP literals to the resolver too.
        let addrs: Vec<SocketAddr> = match name.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, 0)],
            Err(_) => tokio::net::lookup_host((name.as_str(), 0)).await?.collect(),
        };
        if trusted {
            return Ok(addrs);
        }
        let (allowed, denied): (Vec<_>, Vec<_>) =
            addrs.into_iter().partition(|a| policy.allows(a.ip()));
        match (allowed.is_empty(), denied.first()) {
            (true, Some(first)) => Err(Box::new(Denied {
                host: name,
                address: first.ip(),
                category: Category::of(first.ip()),
            })),
            (false, Some(first)) => {
                tracing::debug!(
                    host = %name,
                    address = %first.ip(),
                    denied = denied.len(),
                    "dropping addresses the address policy denies"
                );
                Ok(allowed)
            }
            (_, None) => Ok(allowed),
        }
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let lookup = self.lookup_name(name.as_str());
        Box::pin(async move {
            let addrs: reqwest::dns::Addrs = Box::new(lookup.await?.into_iter());
            Ok(addrs)
        })
    }
}

/// hyper's connector resolves through the same policy as reqwest's.
impl tower::Service<HyperName> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: HyperName) -> Self::Future {
        let lookup = self.lookup_name(name.as_str());
        Box::pin(async move { Ok(lookup.await?.into_iter()) })
    }
}

#[cfg(test)]
mod tests;
