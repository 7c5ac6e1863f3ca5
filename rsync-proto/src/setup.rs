//! Session setup after the module is accepted: the argument list
//! (options.c `server_options`, `maybe_add_e_option`), compat flags and the
//! checksum negotiation (compat.c `setup_protocol`, `negotiate_the_strings`).

use crate::checksum::ChecksumKind;
use crate::delta::CompressionKind;
use crate::version::ProtocolVersion;

/// Compat flag bits the server sends (compat.c CF_*).
pub mod compat {
    /// Incremental recursion is on.
    pub const INC_RECURSE: u32 = 1 << 0;
    /// Symlink times are preserved.
    pub const SYMLINK_TIMES: u32 = 1 << 1;
    /// Symlink targets are iconv-converted.
    pub const SYMLINK_ICONV: u32 = 1 << 2;
    /// The safe file-list end marker is in use.
    pub const SAFE_FLIST: u32 = 1 << 3;
    /// xattr optimisation is off.
    pub const AVOID_XATTR_OPTIM: u32 = 1 << 4;
    /// MD5 block sums put the seed first.
    pub const CHKSUM_SEED_FIX: u32 = 1 << 5;
    /// --inplace with --partial-dir is understood.
    pub const INPLACE_PARTIAL_DIR: u32 = 1 << 6;
    /// Varint flist flags and checksum/compress name negotiation.
    pub const VARINT_FLIST_FLAGS: u32 = 1 << 7;
    /// Id lists carry a name for id 0.
    pub const ID0_NAMES: u32 = 1 << 8;
}

/// The capabilities we announce after `-e.` (the server's `client_info`).
/// `i` (incremental recursion) is deliberately absent: see the crate docs.
pub const CLIENT_INFO: &str = "LsfxCIvu";

/// What we ask the daemon's sender to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferArgs {
    /// `-r`.
    pub recursive: bool,
    /// `-l`: send symlinks as symlinks (otherwise they are skipped).
    pub links: bool,
    /// `-o`.
    pub owner: bool,
    /// `-g`.
    pub group: bool,
    /// `--checksum-choice=NAME`; `None` negotiates.
    pub checksum_choice: Option<ChecksumKind>,
    /// `--timeout=N` forwarded to the daemon.
    pub timeout: Option<u32>,
    /// `--bwlimit=KiB/s` forwarded to the daemon.
    pub bwlimit_kib: Option<u64>,
    /// `-z` and its options; `None` transfers uncompressed.
    pub compress: Option<CompressArgs>,
}

/// What we ask of the sender's compression (options.c server_options).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompressArgs {
    /// A forced algorithm; `None` negotiates (compat.c
    /// negotiate_the_strings), or means zlib with a peer that cannot.
    pub choice: Option<CompressionKind>,
    /// `--compress-level=N`; `None` leaves the algorithm's default.
    pub level: Option<i32>,
}

impl CompressArgs {
    /// Whether the `z` short option goes in the cluster: stock rsync puts it
    /// there only when its choice is CPRES_ZLIB, which a plain `-z` is until
    /// negotiation (options.c server_options).
    pub fn short_z(&self) -> bool {
        matches!(self.choice, None | Some(CompressionKind::Zlib))
    }

    /// The long options that go with it.
    pub fn long_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(l) = self.level {
            args.push(format!("--compress-level={l}"));
        }
        match self.choice {
            None => {}
            Some(CompressionKind::Zlibx) => args.push("--new-compress".into()),
            Some(CompressionKind::Zlib) => args.push("--old-compress".into()),
            Some(k) => args.push(format!("--compress-choice={}", k.name())),
        }
        args
    }
}

impl TransferArgs {
    /// The option cluster, e.g. `-ltpre.LsfxCIvu`.
    pub fn cluster(&self, protocol: ProtocolVersion) -> String {
        let mut s = String::from("-");
        if self.links {
            s.push('l');
        }
        if self.owner {
            s.push('o');
        }
        if self.group {
            s.push('g');
        }
        s.push_str("tp");
        if self.recursive {
            s.push('r');
        }
        if self.compress.is_some_and(|c| c.short_z()) {
            s.push('z');
        }
        if protocol.sends_client_info() {
            s.push_str("e.");
            s.push_str(CLIENT_INFO);
        }
        s
    }

    /// The full argument list for `paths` (each `module[/path]`), framed for
    /// `protocol`: NUL-terminated with an extra NUL at >= 30, else lines
    /// ending in an empty line.
    pub fn encode(&self, protocol: ProtocolVersion, paths: &[String]) -> Vec<u8> {
        let mut args: Vec<String> =
            vec!["--server".into(), "--sender".into(), self.cluster(protocol)];
        if let Some(t) = self.timeout {
            args.push(format!("--timeout={t}"));
        }
        if let Some(k) = self.bwlimit_kib {
            args.push(format!("--bwlimit={k}"));
        }
        if let Some(c) = self.checksum_choice {
            args.push(format!("--checksum-choice={}", c.name()));
        }
        if let Some(c) = &self.compress {
            args.extend(c.long_args());
        }
        args.push(".".into());
        args.extend(paths.iter().cloned());
        let sep = if protocol.args_nul_separated() {
            b'\0'
        } else {
            b'\n'
        };
        let mut out = Vec::new();
        for a in args {
            out.extend_from_slice(a.as_bytes());
            out.push(sep);
        }
        out.push(sep);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> TransferArgs {
        TransferArgs {
            recursive: true,
            links: true,
            owner: true,
            group: true,
            checksum_choice: None,
            timeout: None,
            bwlimit_kib: None,
            compress: None,
        }
    }

    #[test]
    fn cluster_matches_stock_no_inc_recursive_shape() {
        // Stock 3.5.0 with --no-inc-recursive sends -logDtpre.LsfxCIvu; we
        // leave out D (devices are never transferred).
        assert_eq!(args().cluster(ProtocolVersion::V32), "-logtpre.LsfxCIvu");
        assert_eq!(args().cluster(ProtocolVersion::V29), "-logtpr");
    }

    #[test]
    fn args_are_nul_separated_from_30() {
        let a = TransferArgs {
            links: false,
            owner: false,
            group: false,
            ..args()
        };
        assert_eq!(
            a.encode(ProtocolVersion::V31, &["mod/".into()]),
            b"--server\0--sender\0-tpre.LsfxCIvu\0.\0mod/\0\0"
        );
        assert_eq!(
            a.encode(ProtocolVersion::V29, &["mod/sub/".into()]),
            b"--server\n--sender\n-tpr\n.\nmod/sub/\n\n"
        );
    }

    #[test]
    fn forced_checksum_is_an_argument() {
        let a = TransferArgs {
            checksum_choice: Some(ChecksumKind::Md5),
            ..args()
        };
        let enc = a.encode(ProtocolVersion::V32, &["m".into()]);
        assert!(enc.windows(21).any(|w| w == b"--checksum-choice=md5"));
    }

    #[test]
    fn compression_options_match_stock_server_options() {
        // What stock 3.5.0 sends for each client option (options.c
        // server_options): -z alone is `z` in the cluster and negotiates.
        let with = |choice, level| TransferArgs {
            compress: Some(CompressArgs { choice, level }),
            ..args()
        };
        type Case = (
            Option<CompressionKind>,
            Option<i32>,
            &'static str,
            &'static [&'static str],
        );
        let cases: [Case; 6] = [
            (None, None, "-logtprze.LsfxCIvu", &[]),
            (None, Some(9), "-logtprze.LsfxCIvu", &["--compress-level=9"]),
            (
                Some(CompressionKind::Zlib),
                None,
                "-logtprze.LsfxCIvu",
                &["--old-compress"],
            ),
            (
                Some(CompressionKind::Zlibx),
                None,
                "-logtpre.LsfxCIvu",
                &["--new-compress"],
            ),
            (
                Some(CompressionKind::Zstd),
                Some(3),
                "-logtpre.LsfxCIvu",
                &["--compress-level=3", "--compress-choice=zstd"],
            ),
            (
                Some(CompressionKind::Lz4),
                None,
                "-logtpre.LsfxCIvu",
                &["--compress-choice=lz4"],
            ),
        ];
        for (choice, level, cluster, long) in cases {
            let a = with(choice, level);
            assert_eq!(a.cluster(ProtocolVersion::V32), cluster, "{choice:?}");
            let enc = a.encode(ProtocolVersion::V32, &["m".into()]);
            let parts: Vec<&[u8]> = enc.split(|&b| b == 0).collect();
            for l in long {
                assert!(parts.contains(&l.as_bytes()), "{choice:?}: {l} missing");
            }
            let extra = parts
                .iter()
                .filter(|p| p.starts_with(b"--") && p.windows(8).any(|w| w == b"compress"))
                .count();
            assert_eq!(extra, long.len(), "{choice:?}");
        }
        assert_eq!(with(None, None).cluster(ProtocolVersion::V29), "-logtprz");
    }
}
