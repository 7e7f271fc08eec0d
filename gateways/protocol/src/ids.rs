//! Newtypes for every identifier and unit that crosses the wire.

use core::fmt;

macro_rules! id {
    ($(#[$m:meta])* $name:ident($t:ty)) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub $t);

        impl $name {
            /// The raw value.
            pub const fn get(self) -> $t {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id!(
    /// A consistency group: namespaces whose writes stay mutually ordered.
    GroupId(u32)
);
id!(
    /// A sequence domain: one counter per (group, destination). The
    /// appliance numbers every journal record of a group for each
    /// destination it replicates to (seed 003, Fig. 4 granularity).
    DomainId(u64)
);
id!(
    /// A sequence number inside one domain. The first record of a domain is
    /// 1; 0 means "nothing yet". 64 bits, so it never wraps in practice.
    SeqNo(u64)
);
id!(
    /// A group timestamp in nanoseconds, strictly increasing within a
    /// domain (assigned together with the sequence number).
    Timestamp(u64)
);
id!(
    /// A session epoch: bumped on every role change or state loss, so a
    /// stale peer is refused.
    Epoch(u64)
);
id!(
    /// A peer identity; the pre-shared key is looked up by it.
    NodeId(u64)
);
id!(
    /// An NVMe namespace id on the appliance.
    Nsid(u32)
);

impl SeqNo {
    /// The number after this one.
    pub const fn next(self) -> SeqNo {
        SeqNo(self.0 + 1)
    }
}
