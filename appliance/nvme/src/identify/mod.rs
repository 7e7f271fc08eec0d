//! Identify command data structures (CNS values, controller, namespace,
//! namespace lists, descriptors and I/O command set structures).

mod controller;
mod lists;
mod namespace;
mod nvm;

pub use controller::*;
pub use lists::*;
pub use namespace::*;
pub use nvm::*;

/// Size of every Identify data structure.
pub const IDENTIFY_DATA_SIZE: usize = 4096;

/// Identify Namespace data structure for the nsid (NVM command set).
pub const CNS_NAMESPACE: u8 = 0x00;
/// Identify Controller data structure.
pub const CNS_CONTROLLER: u8 = 0x01;
/// Active Namespace ID list.
pub const CNS_ACTIVE_NAMESPACES: u8 = 0x02;
/// Namespace Identification Descriptor list.
pub const CNS_NS_DESCRIPTORS: u8 = 0x03;
/// NVM Set list.
pub const CNS_NVM_SET_LIST: u8 = 0x04;
/// I/O command set specific Identify Namespace.
pub const CNS_CSI_NAMESPACE: u8 = 0x05;
/// I/O command set specific Identify Controller.
pub const CNS_CSI_CONTROLLER: u8 = 0x06;
/// Active Namespace ID list for an I/O command set.
pub const CNS_CSI_ACTIVE_NAMESPACES: u8 = 0x07;
/// I/O command set independent Identify Namespace.
pub const CNS_CS_INDEPENDENT_NAMESPACE: u8 = 0x08;
/// Identify I/O Command Set data structure.
pub const CNS_IO_COMMAND_SETS: u8 = 0x1C;

/// Command Set Identifiers.
pub mod csi {
    /// NVM command set.
    pub const NVM: u8 = 0x00;
    /// Key Value command set.
    pub const KEY_VALUE: u8 = 0x01;
    /// Zoned Namespace command set.
    pub const ZONED: u8 = 0x02;
}
