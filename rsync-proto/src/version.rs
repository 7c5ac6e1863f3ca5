//! The negotiated protocol version, and every behaviour that depends on it.

use std::fmt;

/// An rsync protocol version, as negotiated in the daemon greeting.
///
/// All version-dependent behaviour goes through the named methods here rather
/// than bare comparisons scattered through the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion(u32);

impl ProtocolVersion {
    /// Protocol 29 (rsync 2.6.4 .. 2.6.9).
    pub const V29: ProtocolVersion = ProtocolVersion(29);
    /// Protocol 30 (rsync 3.0.x).
    pub const V30: ProtocolVersion = ProtocolVersion(30);
    /// Protocol 31 (rsync 3.1.x .. 3.3.x upstream).
    pub const V31: ProtocolVersion = ProtocolVersion(31);
    /// Protocol 32 (rsync 3.4+, and Debian's patched 3.2.7).
    pub const V32: ProtocolVersion = ProtocolVersion(32);
    /// The oldest version this crate speaks.
    pub const MIN: ProtocolVersion = Self::V29;
    /// The newest version this crate speaks, and the default it announces.
    pub const MAX: ProtocolVersion = Self::V32;

    /// Returns the version if this crate supports it (29 ..= 32).
    pub fn new(v: u32) -> Option<ProtocolVersion> {
        (Self::MIN.0..=Self::MAX.0)
            .contains(&v)
            .then_some(ProtocolVersion(v))
    }

    /// The numeric version.
    pub fn get(self) -> u32 {
        self.0
    }

    /// With zlib compression, a matched block longer than 0xffff bytes
    /// enters the inflater's history piece by piece; below 31 the first
    /// piece was fed again each time (token.c see_deflate_token, a bug kept
    /// for compatibility).
    pub fn advances_in_stored_history(self) -> bool {
        self.0 >= 31
    }
    /// The greeting carries a sub-version (`30.0`): protocol >= 30.
    pub fn greeting_has_subversion(self) -> bool {
        self.0 >= 30
    }
    /// The argument list is NUL-separated (`rl_nulls`): protocol >= 30.
    pub fn args_nul_separated(self) -> bool {
        self.0 >= 30
    }
    /// The server sends compat flags after the greeting (compat.c setup_protocol): protocol >= 30.
    pub fn has_compat_flags(self) -> bool {
        self.0 >= 30
    }
    /// varint30/varlong30 are varints (not int32/longint): protocol >= 30.
    pub fn uses_varint30(self) -> bool {
        self.0 >= 30
    }
    /// File indexes use the compact ndx encoding (io.c write_ndx): protocol >= 30.
    pub fn compact_ndx(self) -> bool {
        self.0 >= 30
    }
    /// The client's output to the server is multiplexed (main.c client_run): protocol >= 30.
    pub fn client_output_multiplexed(self) -> bool {
        self.0 >= 30
    }
    /// The `-e.<flags>` capability suffix is sent in the option cluster: protocol >= 30.
    pub fn sends_client_info(self) -> bool {
        self.0 >= 30
    }
    /// Requests and echoes carry shortint iflags (rsync.c read_ndx_and_attrs): protocol >= 29.
    pub fn has_iflags(self) -> bool {
        self.0 >= 29
    }
    /// mtime is a varlong(4) instead of a uint32 (flist.c recv_file_entry): protocol >= 30.
    pub fn mtime_varlong(self) -> bool {
        self.0 >= 30
    }
    /// uid/gid are varints instead of int32: protocol >= 30.
    pub fn ids_varint(self) -> bool {
        self.0 >= 30
    }
    /// io_error follows the id lists as an int32 (flist.c recv_file_list): protocol < 30.
    pub fn io_error_after_id_lists(self) -> bool {
        self.0 < 30
    }
    /// Safe-flist end marker is always in effect (compat.c): protocol >= 31.
    pub fn always_safe_flist(self) -> bool {
        self.0 >= 31
    }
    /// Directories sort after files within a directory (flist.c f_name_cmp): protocol >= 29.
    pub fn dirs_sort_after_files(self) -> bool {
        self.0 >= 29
    }
    /// Largest block length a sum head may carry (io.c read_sum_head).
    pub fn max_block_len(self) -> i32 {
        if self.0 >= 30 {
            128 * 1024
        } else {
            512 * 1024 * 1024
        }
    }
    /// Number of transfer phases the sender runs (sender.c send_files max_phase).
    pub fn max_phase(self) -> u32 {
        if self.0 >= 29 {
            2
        } else {
            1
        }
    }
    /// The end-of-run exchange has the extra delete-stats NDX_DONE (generator.c): protocol >= 31.
    pub fn has_delete_done_ndx(self) -> bool {
        self.0 >= 31
    }
    /// A daemon rejects a greeting above 31 that lacks a digest list (clientserver.c).
    pub fn requires_digest_list(self) -> bool {
        self.0 > 31
    }
    /// Default strong checksum without negotiation: md5 at >= 30, md4 below (compat.c).
    pub fn default_checksum_is_md5(self) -> bool {
        self.0 >= 30
    }
    /// Stats have the flist build/transfer times (main.c handle_stats): protocol >= 29.
    pub fn stats_have_flist_times(self) -> bool {
        self.0 >= 29
    }
}

impl Default for ProtocolVersion {
    fn default() -> Self {
        Self::MAX
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
