//! The unprivileged substrate: VPC number N owns 127.(base+N).0.0/16, and an address
//! a.b.c.d of that VPC is 127.(base+N).c.d here (the low 16 bits). All of 127/8 is local
//! on Linux, so endpoint listeners and backends are real sockets; there is no isolation
//! and no SNAT. `base` lets several servers (or tests) share one machine.

use std::io;
use std::net::Ipv4Addr;

use socket2::Socket;
use vpcep_model::{HostSpec, VpcSpec};

use super::{Local, MakeSocket, Substrate};

#[derive(Default)]
pub struct Loopback {
    base: u32,
}

impl Loopback {
    pub fn new(base: u8) -> Loopback {
        Loopback { base: base as u32 }
    }

    fn block(&self, seq: u32) -> io::Result<u8> {
        u8::try_from(self.base + seq)
            .ok()
            .filter(|b| (1..=254).contains(b))
            .ok_or_else(|| io::Error::other(format!("VPC number {seq} does not fit 127.{}+N (the loopback substrate holds VPCs up to 127.254.0.0/16)", self.base)))
    }

    fn map(&self, seq: u32, ip: Ipv4Addr) -> Ipv4Addr {
        let o = ip.octets();
        Ipv4Addr::new(127, self.block(seq).unwrap_or(255), o[2], o[3])
    }
}

impl Substrate for Loopback {
    fn name(&self) -> &'static str {
        "loopback"
    }

    fn ensure_vpc(&self, vpc: &VpcSpec) -> io::Result<()> {
        self.block(vpc.seq).map(|_| ())
    }

    fn remove_vpc(&self, _: &str) -> io::Result<()> {
        Ok(())
    }

    fn ensure_host(&self, _: &VpcSpec, _: &HostSpec) -> io::Result<()> {
        Ok(())
    }

    fn remove_host(&self, _: &HostSpec) -> io::Result<()> {
        Ok(())
    }

    fn add_local(
        &self,
        vpc: &VpcSpec,
        _: &str,
        ip: Ipv4Addr,
        kind: Local,
    ) -> io::Result<Option<Ipv4Addr>> {
        Ok(match kind {
            Local::Endpoint => Some(self.map(vpc.seq, ip)),
            Local::Snat => None,
        })
    }

    fn remove_local(&self, _: &VpcSpec, _: &str, _: Ipv4Addr, _: Local) -> io::Result<()> {
        Ok(())
    }

    fn map_remote(&self, vpc: &VpcSpec, ip: Ipv4Addr) -> Ipv4Addr {
        self.map(vpc.seq, ip)
    }

    fn make_sockets(
        &self,
        _: Option<&VpcSpec>,
        n: usize,
        make: MakeSocket,
    ) -> io::Result<Vec<Socket>> {
        (0..n).map(|_| make()).collect()
    }

    fn host_netns(&self, _: &str) -> Option<String> {
        None
    }

    fn local_ip(&self, seq: u32, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        self.block(seq).ok().map(|_| self.map(seq, ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        let l = Loopback::new(0);
        assert_eq!(
            l.local_ip(3, Ipv4Addr::new(192, 168, 0, 4)),
            Some(Ipv4Addr::new(127, 3, 0, 4))
        );
        assert_eq!(
            l.local_ip(254, Ipv4Addr::new(10, 1, 2, 3)),
            Some(Ipv4Addr::new(127, 254, 2, 3))
        );
        assert_eq!(l.local_ip(255, Ipv4Addr::new(10, 1, 2, 3)), None);
        let shifted = Loopback::new(100);
        assert_eq!(
            shifted.local_ip(3, Ipv4Addr::new(192, 168, 0, 4)),
            Some(Ipv4Addr::new(127, 103, 0, 4))
        );
        let vpc = VpcSpec {
            id: "v".into(),
            seq: 155,
            subnets: vec![],
        };
        assert!(shifted.ensure_vpc(&vpc).is_err());
    }
}
