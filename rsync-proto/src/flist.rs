//! The file list: entry decoding (flist.c `recv_file_entry`,
//! `recv_file_list`), the uid/gid name lists (uidlist.c `recv_id_list`), and
//! the sort that fixes file indexes (flist.c `f_name_cmp`,
//! `flist_sort_and_clean`).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::error::{Limits, ProtocolError};
use crate::version::ProtocolVersion;
use crate::wire::{self, put_i32, put_varint, put_varlong, Need, Reader, Step};

/// XMIT_* flag bits of a file-list entry (rsync.h).
pub mod xmit {
    /// A top-level directory of the transfer.
    pub const TOP_DIR: u32 = 1 << 0;
    /// Mode equals the previous entry's.
    pub const SAME_MODE: u32 = 1 << 1;
    /// A second flags byte follows (byte-flag mode, protocol >= 28).
    pub const EXTENDED_FLAGS: u32 = 1 << 2;
    /// uid equals the previous entry's.
    pub const SAME_UID: u32 = 1 << 3;
    /// gid equals the previous entry's.
    pub const SAME_GID: u32 = 1 << 4;
    /// The name shares a prefix with the previous name.
    pub const SAME_NAME: u32 = 1 << 5;
    /// The name suffix length is a varint30, not a byte.
    pub const LONG_NAME: u32 = 1 << 6;
    /// mtime equals the previous entry's.
    pub const SAME_TIME: u32 = 1 << 7;
    /// Directory without content (protocol >= 30, dirs only).
    pub const NO_CONTENT_DIR: u32 = 1 << 8;
    /// Hard-link data follows (only with -H).
    pub const HLINKED: u32 = 1 << 9;
    /// A user name follows the uid (protocol >= 30).
    pub const USER_NAME_FOLLOWS: u32 = 1 << 10;
    /// A group name follows the gid (protocol >= 30).
    pub const GROUP_NAME_FOLLOWS: u32 = 1 << 11;
    /// First of a hard-link group; in the end marker: io_error follows.
    pub const HLINK_FIRST: u32 = 1 << 12;
    /// End-marker bit meaning an io_error value follows.
    pub const IO_ERROR_ENDLIST: u32 = 1 << 12;
    /// Nanoseconds of the mtime follow (protocol >= 31).
    pub const MOD_NSEC: u32 = 1 << 13;
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const VALID_TYPES: [u32; 7] = [
    0o100000, 0o040000, 0o120000, 0o020000, 0o060000, 0o010000, 0o140000,
];

/// Index of an entry in the sorted file list, as used on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileIndex(pub i32);

impl fmt::Display for FileIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What kind of file an entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file; its content can be requested.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO or socket (never transferred by this crate).
    Special,
}

/// One entry of the file list.
#[derive(Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the transfer root, as raw bytes. Checked on receipt:
    /// relative, no `.` or `..` components, no empty components, no NUL.
    pub name: Vec<u8>,
    /// Full st_mode (type and permission bits).
    pub mode: u32,
    /// Size in bytes (0 for non-regular files).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time (protocol >= 31, else 0).
    pub mtime_nsec: u32,
    /// Owner id on the sender, when ownership was requested.
    pub uid: Option<u32>,
    /// Group id on the sender, when ownership was requested.
    pub gid: Option<u32>,
    /// Symlink target, when symlinks were requested and this is a link.
    pub symlink_target: Option<Vec<u8>>,
    /// The XMIT flags the entry arrived with.
    pub xflags: u32,
}

impl fmt::Debug for FileEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileEntry")
            .field("name", &String::from_utf8_lossy(&self.name))
            .field("mode", &format_args!("{:o}", self.mode))
            .field("size", &self.size)
            .field("mtime", &self.mtime)
            .finish_non_exhaustive()
    }
}

impl FileEntry {
    /// The entry's kind, from its mode.
    pub fn kind(&self) -> FileKind {
        match self.mode & S_IFMT {
            S_IFREG => FileKind::Regular,
            S_IFDIR => FileKind::Directory,
            S_IFLNK => FileKind::Symlink,
            _ => FileKind::Special,
        }
    }
    /// Permission bits (`mode & 0o7777`).
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }
    /// The name, lossily decoded for display.
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
    fn is_dir(&self) -> bool {
        self.kind() == FileKind::Directory
    }
    fn split(&self) -> (Option<&[u8]>, &[u8]) {
        match self.name.iter().rposition(|&b| b == b'/') {
            Some(p) => (Some(&self.name[..p]), &self.name[p + 1..]),
            None => (None, &self.name[..]),
        }
    }
}

/// Checks a received name the way `clean_fname(CFN_REFUSE_DOT_DOT_DIRS)`
/// plus the absolute-path check do, but strictly: any name that is not
/// already clean is refused rather than rewritten.
pub fn check_name(name: &[u8]) -> Result<(), ProtocolError> {
    let unsafe_name = || ProtocolError::UnsafeName {
        name: String::from_utf8_lossy(name).into_owned(),
    };
    if name == b"." {
        return Ok(());
    }
    if name.is_empty() || name.contains(&0) || name[0] == b'/' {
        return Err(unsafe_name());
    }
    for comp in name.split(|&b| b == b'/') {
        if comp.is_empty() || comp == b"." || comp == b".." {
            return Err(unsafe_name());
        }
    }
    Ok(())
}

/// Checks the shape of a whole file list before anything is written: no
/// name twice, and every entry below the top level sits in a directory that
/// the list itself names as a directory. A stock sender's recursive list
/// always has that shape (it sends each directory before descending into
/// it); a list that puts a file "under" a symlink or a file, or under a
/// directory it never sent, is refused. Linear in the bytes of the names.
pub fn check_tree(entries: &[FileEntry]) -> Result<(), ProtocolError> {
    let mut kinds: HashMap<&[u8], bool> = HashMap::with_capacity(entries.len());
    for e in entries {
        if kinds.insert(&e.name, e.is_dir()).is_some() {
            return Err(ProtocolError::DuplicateName {
                name: e.name_lossy(),
            });
        }
    }
    for e in entries {
        if let (Some(dir), _) = e.split() {
            if kinds.get(dir) != Some(&true) {
                return Err(ProtocolError::NotInsideDirectory {
                    name: e.name_lossy(),
                });
            }
        }
    }
    Ok(())
}

/// Options that decide which fields the sender includes in each entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlistOptions {
    /// Negotiated protocol.
    pub protocol: ProtocolVersion,
    /// Compat flag VARINT_FLIST_FLAGS: flags are varints.
    pub varint_flags: bool,
    /// Safe-flist end marker allowed (compat SAFE_FLIST or protocol >= 31).
    pub safe_flist: bool,
    /// `-l` was sent: symlink entries carry their target.
    pub preserve_links: bool,
    /// `-o` was sent: entries carry uids and a uid name list follows.
    pub preserve_uid: bool,
    /// `-g` was sent: entries carry gids and a gid name list follows.
    pub preserve_gid: bool,
    /// Compat flag ID0_NAMES: the id lists end with a name for id 0.
    pub id0_names: bool,
}

/// One item of the file-list stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlistItem {
    /// An entry, in the sender's order.
    Entry(FileEntry),
    /// The end marker, with the sender's io_error flags (0 if not sent).
    End {
        /// IOERR_* bits.
        io_error: i32,
    },
}

/// The state carried between entries ("same as previous" fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Prev {
    name: Vec<u8>,
    mode: u32,
    mtime: i64,
    uid: u32,
    gid: u32,
}

/// Incremental decoder for file-list entries.
#[derive(Debug, Clone)]
pub struct FlistDecoder {
    opts: FlistOptions,
    limits: Limits,
    prev: Prev,
    /// uid/gid names carried inline (USER_NAME_FOLLOWS).
    inline_names: Vec<(bool, u32, String)>,
}

impl FlistDecoder {
    /// A decoder for a fresh file list.
    pub fn new(opts: FlistOptions, limits: Limits) -> Self {
        FlistDecoder {
            opts,
            limits,
            prev: Prev::default(),
            inline_names: Vec::new(),
        }
    }

    /// Decodes one item from the front of `buf`. `Ok(None)`: need more bytes
    /// (nothing consumed, state unchanged).
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(FlistItem, usize)>, ProtocolError> {
        let mut r = Reader::new(buf);
        let mut prev = self.prev.clone();
        let mut names = Vec::new();
        let item = wire::finish(self.read_item(&mut r, &mut prev, &mut names))?;
        Ok(item.map(|item| {
            self.prev = prev;
            self.inline_names.extend(names);
            (item, r.pos())
        }))
    }

    /// Names that arrived inline with entries: (is_group, id, name).
    pub fn inline_names(&self) -> &[(bool, u32, String)] {
        &self.inline_names
    }

    fn read_flags(&self, r: &mut Reader<'_>) -> Step<Option<u32>> {
        if self.opts.varint_flags {
            let f = r.varint()? as u32;
            return Ok((f != 0).then_some(f));
        }
        let mut f = u32::from(r.u8()?);
        if f == 0 {
            return Ok(None);
        }
        if f & xmit::EXTENDED_FLAGS != 0 {
            f |= u32::from(r.u8()?) << 8;
        }
        Ok(Some(f))
    }

    fn read_item(
        &self,
        r: &mut Reader<'_>,
        prev: &mut Prev,
        names: &mut Vec<(bool, u32, String)>,
    ) -> Step<FlistItem> {
        let o = self.opts;
        let Some(flags) = self.read_flags(r)? else {
            // varint mode: a 0 flag is followed by io_error (flist.c recv_file_list).
            let io_error = if o.varint_flags { r.varint()? } else { 0 };
            return Ok(FlistItem::End { io_error });
        };
        if !o.varint_flags && flags == (xmit::EXTENDED_FLAGS | xmit::IO_ERROR_ENDLIST) {
            if !o.safe_flist {
                return Err(ProtocolError::InvalidValue {
                    what: "flist end flags without safe-flist",
                    value: i64::from(flags),
                }
                .into());
            }
            return Ok(FlistItem::End {
                io_error: r.varint()?,
            });
        }
        let l1 = if flags & xmit::SAME_NAME != 0 {
            usize::from(r.u8()?)
        } else {
            0
        };
        let l2 = if flags & xmit::LONG_NAME != 0 {
            self.varint30(r)?
        } else {
            i64::from(r.u8()?)
        };
        let l2 = usize::try_from(l2).map_err(|_| ProtocolError::InvalidValue {
            what: "name length",
            value: l2,
        })?;
        if l1 > prev.name.len() {
            return Err(ProtocolError::InvalidValue {
                what: "name prefix length",
                value: l1 as i64,
            }
            .into());
        }
        crate::error::check_limit("name length", (l1 + l2) as u64, self.limits.max_name as u64)?;
        let mut name = prev.name[..l1].to_vec();
        name.extend_from_slice(r.take(l2)?);
        check_name(&name)?;
        let lossy = || String::from_utf8_lossy(&name).into_owned();
        if flags & xmit::HLINKED != 0 {
            return Err(ProtocolError::UnrequestedFeature {
                name: lossy(),
                feature: "hard links",
            }
            .into());
        }
        let size = self.varlong30(r, 3)?;
        if flags & xmit::SAME_TIME == 0 {
            prev.mtime = if o.protocol.mtime_varlong() {
                r.varlong(4)?
            } else {
                i64::from(r.i32()? as u32)
            };
        }
        let mtime_nsec = if flags & xmit::MOD_NSEC != 0 && o.protocol >= ProtocolVersion::V31 {
            let n = r.varint()?;
            if !(0..=999_999_999).contains(&n) {
                return Err(ProtocolError::InvalidValue {
                    what: "mtime nsec",
                    value: i64::from(n),
                }
                .into());
            }
            n as u32
        } else {
            0
        };
        if flags & xmit::SAME_MODE == 0 {
            prev.mode = r.i32()? as u32;
        }
        let mode = prev.mode;
        if !VALID_TYPES.contains(&(mode & S_IFMT)) {
            return Err(ProtocolError::BadMode {
                name: lossy(),
                mode,
            }
            .into());
        }
        if name == b"." && mode & S_IFMT != S_IFDIR {
            return Err(ProtocolError::BadMode {
                name: lossy(),
                mode,
            }
            .into());
        }
        let mut uid = None;
        if o.preserve_uid {
            if flags & xmit::SAME_UID == 0 {
                prev.uid = self.read_id(r)?;
                if o.protocol.ids_varint() && flags & xmit::USER_NAME_FOLLOWS != 0 {
                    names.push((false, prev.uid, read_id_name(r)?));
                }
            }
            uid = Some(prev.uid);
        }
        let mut gid = None;
        if o.preserve_gid {
            if flags & xmit::SAME_GID == 0 {
                prev.gid = self.read_id(r)?;
                if o.protocol.ids_varint() && flags & xmit::GROUP_NAME_FOLLOWS != 0 {
                    names.push((true, prev.gid, read_id_name(r)?));
                }
            }
            gid = Some(prev.gid);
        }
        let mut symlink_target = None;
        if mode & S_IFMT == S_IFLNK && o.preserve_links {
            let len = self.varint30(r)?;
            if len < 0 || len as u64 >= self.limits.max_name as u64 {
                return Err(ProtocolError::LimitExceeded {
                    what: "symlink target length",
                    value: len as u64,
                    limit: self.limits.max_name as u64,
                }
                .into());
            }
            symlink_target = Some(r.take(len as usize)?.to_vec());
        }
        if size < 0 {
            return Err(ProtocolError::InvalidValue {
                what: "file length",
                value: size,
            }
            .into());
        }
        let size = if mode & S_IFMT == S_IFREG {
            size as u64
        } else {
            0
        };
        crate::error::check_limit("file size", size, self.limits.max_file_size)?;
        prev.name = name.clone();
        Ok(FlistItem::Entry(FileEntry {
            name,
            mode,
            size,
            mtime: prev.mtime,
            mtime_nsec,
            uid,
            gid,
            symlink_target,
            xflags: flags,
        }))
    }

    fn varint30(&self, r: &mut Reader<'_>) -> Step<i64> {
        Ok(if self.opts.protocol.uses_varint30() {
            i64::from(r.varint()?)
        } else {
            i64::from(r.i32()?)
        })
    }

    fn varlong30(&self, r: &mut Reader<'_>, min: usize) -> Step<i64> {
        if self.opts.protocol.uses_varint30() {
            r.varlong(min)
        } else {
            r.longint()
        }
    }

    fn read_id(&self, r: &mut Reader<'_>) -> Step<u32> {
        Ok(if self.opts.protocol.ids_varint() {
            r.varint()? as u32
        } else {
            r.i32()? as u32
        })
    }
}

fn read_id_name(r: &mut Reader<'_>) -> Step<String> {
    let len = usize::from(r.u8()?);
    Ok(String::from_utf8_lossy(r.take(len)?).into_owned())
}

/// The uid and gid name lists that follow a non-incremental file list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdNames {
    /// uid → user name on the sender.
    pub users: HashMap<u32, String>,
    /// gid → group name on the sender.
    pub groups: HashMap<u32, String>,
}

/// The id lists and the io_error that follows them below protocol 30.
pub type IdListsWithError = (IdNames, i32);

/// Decodes the id lists (uidlist.c recv_id_list) and, below protocol 30,
/// the trailing int32 io_error. Returns the names and that io_error.
pub fn decode_id_lists(
    buf: &[u8],
    opts: &FlistOptions,
    limits: &Limits,
) -> Result<Option<(IdListsWithError, usize)>, ProtocolError> {
    let mut r = Reader::new(buf);
    let out = wire::finish(read_id_lists(&mut r, opts, limits))?;
    Ok(out.map(|v| (v, r.pos())))
}

fn read_id_lists(r: &mut Reader<'_>, o: &FlistOptions, limits: &Limits) -> Step<(IdNames, i32)> {
    let mut names = IdNames::default();
    for (wanted, map) in [
        (o.preserve_uid, &mut names.users),
        (o.preserve_gid, &mut names.groups),
    ] {
        if !wanted {
            continue;
        }
        loop {
            let id = if o.protocol.uses_varint30() {
                r.varint()?
            } else {
                r.i32()?
            };
            if id == 0 {
                if o.id0_names {
                    map.insert(0, read_id_name(r)?);
                }
                break;
            }
            if map.len() >= limits.max_id_names {
                return Err(Need::Invalid(ProtocolError::LimitExceeded {
                    what: "id name list entries",
                    value: map.len() as u64 + 1,
                    limit: limits.max_id_names as u64,
                }));
            }
            map.insert(id as u32, read_id_name(r)?);
        }
    }
    let io_error = if o.protocol.io_error_after_id_lists() {
        r.i32()?
    } else {
        0
    };
    Ok((names, io_error))
}

/// Encodes an entry the way a sender does (flist.c send_file_entry), given
/// the previous entry. Used by tests, the fuzzers and the hostile daemon.
pub fn encode_entry(
    e: &FileEntry,
    prev: Option<&FileEntry>,
    opts: &FlistOptions,
    out: &mut Vec<u8>,
) {
    let mut flags = e.xflags
        & !(xmit::SAME_MODE
            | xmit::SAME_NAME
            | xmit::LONG_NAME
            | xmit::SAME_TIME
            | xmit::SAME_UID
            | xmit::SAME_GID
            | xmit::EXTENDED_FLAGS
            | xmit::USER_NAME_FOLLOWS
            | xmit::GROUP_NAME_FOLLOWS
            | xmit::MOD_NSEC);
    let prev_name: &[u8] = prev.map_or(&[], |p| &p.name);
    let l1 = e
        .name
        .iter()
        .zip(prev_name)
        .take(255)
        .take_while(|(a, b)| a == b)
        .count();
    let l2 = e.name.len() - l1;
    if l1 > 0 {
        flags |= xmit::SAME_NAME;
    }
    if l2 > 255 {
        flags |= xmit::LONG_NAME;
    }
    if let Some(p) = prev {
        if p.mode == e.mode {
            flags |= xmit::SAME_MODE;
        }
        if p.mtime == e.mtime {
            flags |= xmit::SAME_TIME;
        }
        if p.uid == e.uid {
            flags |= xmit::SAME_UID;
        }
        if p.gid == e.gid {
            flags |= xmit::SAME_GID;
        }
    }
    if e.mtime_nsec != 0 && opts.protocol >= ProtocolVersion::V31 {
        flags |= xmit::MOD_NSEC;
    }
    if opts.varint_flags {
        put_varint(
            out,
            if flags == 0 {
                xmit::EXTENDED_FLAGS as i32
            } else {
                flags as i32
            },
        );
    } else {
        if flags == 0 {
            flags = xmit::EXTENDED_FLAGS;
        }
        if flags & 0xff00 != 0 {
            flags |= xmit::EXTENDED_FLAGS;
        }
        out.push(flags as u8);
        if flags & xmit::EXTENDED_FLAGS != 0 {
            out.push((flags >> 8) as u8);
        }
    }
    if flags & xmit::SAME_NAME != 0 {
        out.push(l1 as u8);
    }
    let v30 = opts.protocol.uses_varint30();
    if flags & xmit::LONG_NAME != 0 {
        if v30 {
            put_varint(out, l2 as i32);
        } else {
            put_i32(out, l2 as i32);
        }
    } else {
        out.push(l2 as u8);
    }
    out.extend_from_slice(&e.name[l1..]);
    if v30 {
        put_varlong(out, e.size as i64, 3);
    } else {
        wire::put_longint(out, e.size as i64);
    }
    if flags & xmit::SAME_TIME == 0 {
        if opts.protocol.mtime_varlong() {
            put_varlong(out, e.mtime, 4);
        } else {
            put_i32(out, e.mtime as i32);
        }
    }
    if flags & xmit::MOD_NSEC != 0 {
        put_varint(out, e.mtime_nsec as i32);
    }
    if flags & xmit::SAME_MODE == 0 {
        put_i32(out, e.mode as i32);
    }
    for (wanted, same, id) in [
        (opts.preserve_uid, xmit::SAME_UID, e.uid),
        (opts.preserve_gid, xmit::SAME_GID, e.gid),
    ] {
        if wanted && flags & same == 0 {
            let id = id.unwrap_or(0) as i32;
            if opts.protocol.ids_varint() {
                put_varint(out, id);
            } else {
                put_i32(out, id);
            }
        }
    }
    if e.kind() == FileKind::Symlink && opts.preserve_links {
        let t = e.symlink_target.as_deref().unwrap_or_default();
        if v30 {
            put_varint(out, t.len() as i32);
        } else {
            put_i32(out, t.len() as i32);
        }
        out.extend_from_slice(t);
    }
}

/// Encodes the end-of-list marker with `io_error` (flist.c send_file_list).
pub fn encode_end(io_error: i32, opts: &FlistOptions, out: &mut Vec<u8>) {
    if opts.varint_flags {
        put_varint(out, 0);
        put_varint(out, io_error);
    } else if io_error != 0 && opts.safe_flist {
        out.extend_from_slice(
            &((xmit::EXTENDED_FLAGS | xmit::IO_ERROR_ENDLIST) as u16).to_le_bytes(),
        );
        put_varint(out, io_error);
    } else {
        out.push(0);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NameType {
    Path,
    Item,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NameState {
    Dir,
    Slash,
    Base,
    Trailing,
}

/// One side of the f_name_cmp walk: the bytes being compared now, and where
/// in the (dirname, "/", basename, trailing "/") sequence the walk is.
struct NameWalk<'a> {
    is_dir: bool,
    base: &'a [u8],
    seg: &'a [u8],
    pos: usize,
    state: NameState,
    ty: NameType,
    path_type: NameType,
}

impl<'a> NameWalk<'a> {
    fn new(e: &'a FileEntry, dir: Option<&'a [u8]>, path_type: NameType) -> Self {
        let (_, base) = e.split();
        let mut w = NameWalk {
            is_dir: e.is_dir(),
            base,
            seg: &[],
            pos: 0,
            state: NameState::Dir,
            ty: path_type,
            path_type,
        };
        match dir {
            Some(d) => w.seg = d,
            None => w.load_base(),
        }
        w
    }
    fn load_base(&mut self) {
        self.ty = if self.is_dir {
            self.path_type
        } else {
            NameType::Item
        };
        self.seg = self.base;
        self.pos = 0;
        if self.ty == NameType::Path && self.base == b"." {
            self.ty = NameType::Item;
            self.state = NameState::Trailing;
            self.seg = b"";
        } else {
            self.state = NameState::Base;
        }
    }
    fn at_end(&self) -> bool {
        self.pos >= self.seg.len()
    }
    /// Moves past the end of the current segment: dirname → "/" →
    /// basename → (directories) "/" → end. Returns true when the name is
    /// used up (the C code's s_TRAILING fall-through), after which the side
    /// compares as an item.
    fn next_segment(&mut self) -> bool {
        match self.state {
            NameState::Dir => {
                self.state = NameState::Slash;
                self.seg = b"/";
                self.pos = 0;
                false
            }
            NameState::Slash => {
                self.load_base();
                false
            }
            NameState::Base if self.ty == NameType::Path => {
                self.state = NameState::Trailing;
                self.seg = b"/";
                self.pos = 0;
                false
            }
            NameState::Base | NameState::Trailing => {
                self.state = NameState::Trailing;
                self.ty = NameType::Item;
                true
            }
        }
    }
    fn cur(&self) -> u8 {
        self.seg.get(self.pos).copied().unwrap_or(0)
    }
}

fn type_order(t1: NameType) -> Ordering {
    if t1 == NameType::Path {
        Ordering::Greater
    } else {
        Ordering::Less
    }
}

/// The sender's order of `entries` as indexes: by [`f_name_cmp`], ties in arrival order
/// (the stable order rsync's merge sort gives), with no scratch memory.
fn sort_order(entries: &[FileEntry], protocol: ProtocolVersion) -> Vec<u32> {
    // Limits::max_entries keeps lists far below u32::MAX; larger ones are not sorted.
    let n = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    let mut order: Vec<u32> = (0..n).collect();
    let at = |i: u32| &entries[i as usize];
    order.sort_unstable_by(|&a, &b| f_name_cmp(at(a), at(b), protocol).then(a.cmp(&b)));
    order
}

/// Rearranges `items` so that position `j` holds what was at `order[j]`, in place: each
/// cycle of the permutation is walked once with swaps, and `order` marks what is done.
fn permute<T>(items: &mut [T], mut order: Vec<u32>) {
    const DONE: u32 = u32::MAX;
    if order.len() != items.len() {
        return;
    }
    for i in 0..order.len() {
        if order[i] == DONE {
            continue;
        }
        let mut j = i;
        loop {
            let k = order[j] as usize;
            order[j] = DONE;
            if k == i || k >= items.len() {
                break;
            }
            items.swap(j, k);
            j = k;
        }
    }
}

/// rsync's file-name order (flist.c f_name_cmp): byte order on the path,
/// where a directory compares as `name/`, and from protocol 29 on the files
/// of a directory sort before its subdirectories.
pub fn f_name_cmp(f1: &FileEntry, f2: &FileEntry, protocol: ProtocolVersion) -> Ordering {
    let path_type = if protocol.dirs_sort_after_files() {
        NameType::Path
    } else {
        NameType::Item
    };
    let (d1, _) = f1.split();
    let (d2, _) = f2.split();
    let (d1, d2) = if d1 == d2 { (None, None) } else { (d1, d2) };
    let mut a = NameWalk::new(f1, d1, path_type);
    let mut b = NameWalk::new(f2, d2, path_type);
    if a.ty != b.ty {
        return type_order(a.ty);
    }
    loop {
        if a.at_end() {
            a.next_segment();
            if !b.at_end() && a.ty != b.ty {
                return type_order(a.ty);
            }
        }
        if b.at_end() {
            if b.next_segment() && a.at_end() {
                return Ordering::Equal;
            }
            if a.ty != b.ty {
                return type_order(a.ty);
            }
        }
        let (c1, c2) = (a.cur(), b.cur());
        a.pos += 1;
        b.pos += 1;
        match c1.cmp(&c2) {
            Ordering::Equal => {}
            o => return o,
        }
    }
}

/// The received file list, sorted so that [`FileIndex`] values match the
/// sender's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileList {
    slots: Vec<Option<FileEntry>>,
    /// Names from the id lists (and inline names).
    pub id_names: IdNames,
    /// The sender's io_error flags (non-zero: some files could not be read).
    pub io_error: i32,
}

impl FileList {
    /// Sorts entries as rsync does and clears duplicates, keeping their
    /// slots so that later indexes stay aligned (flist_sort_and_clean).
    ///
    /// Memory stays close to the entries themselves (a 1M-entry list is measured by
    /// `cargo bench -p rsync-proto --bench flist_memory`): the sort orders 4-byte indexes
    /// in place (a stable sort of the entries would need scratch space for half of them)
    /// and applies the order by swapping along its cycles; the map that pairs a directory
    /// with a non-directory of the same name holds only names that some directory has.
    pub fn sorted(mut entries: Vec<FileEntry>, protocol: ProtocolVersion) -> FileList {
        let order = sort_order(&entries, protocol);
        permute(&mut entries, order);
        let mut slots: Vec<Option<FileEntry>> = entries.into_iter().map(Some).collect();
        // Only consulted for directories when they sort after files (see below), so only
        // names that a directory also has can ever be looked up.
        let dir_names: HashSet<Vec<u8>> = if protocol.dirs_sort_after_files() {
            slots
                .iter()
                .flatten()
                .filter(|e| e.is_dir())
                .map(|e| e.name.clone())
                .collect()
        } else {
            HashSet::new()
        };
        let mut non_dirs: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut prev_i: Option<usize> = None;
        for i in 0..slots.len() {
            let Some(cur) = slots[i].as_ref() else {
                continue;
            };
            let same_as_prev = prev_i
                .and_then(|p| slots[p].as_ref())
                .is_some_and(|p| f_name_cmp(cur, p, protocol) == Ordering::Equal);
            let j = if same_as_prev {
                prev_i
            } else if protocol.dirs_sort_after_files() && cur.is_dir() {
                non_dirs
                    .get(&cur.name)
                    .copied()
                    .filter(|&j| slots[j].is_some())
            } else {
                None
            };
            let cur_is_dir = cur.is_dir();
            if !cur_is_dir && dir_names.contains(&cur.name) {
                non_dirs.entry(cur.name.clone()).or_insert(i);
            }
            match j {
                Some(j) => {
                    let j_is_dir = slots[j].as_ref().is_some_and(FileEntry::is_dir);
                    if cur_is_dir && !j_is_dir {
                        slots[j] = None;
                        prev_i = Some(i);
                    } else {
                        slots[i] = None;
                    }
                }
                None => prev_i = Some(i),
            }
        }
        FileList {
            slots,
            id_names: IdNames::default(),
            io_error: 0,
        }
    }

    /// Number of slots (including cleared duplicates).
    pub fn len(&self) -> usize {
        self.slots.len()
    }
    /// True when the list has no slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
    /// The entry at `ndx`, or `None` if out of range or a cleared duplicate.
    pub fn get(&self, ndx: FileIndex) -> Option<&FileEntry> {
        usize::try_from(ndx.0)
            .ok()
            .and_then(|i| self.slots.get(i))
            .and_then(Option::as_ref)
    }
    /// Active entries with their indexes, in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = (FileIndex, &FileEntry)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (FileIndex(i as i32), e)))
    }
    /// The sender's user name for `uid`, if it sent one.
    pub fn user_name(&self, uid: u32) -> Option<&str> {
        self.id_names.users.get(&uid).map(String::as_str)
    }
    /// The sender's group name for `gid`, if it sent one.
    pub fn group_name(&self, gid: u32) -> Option<&str> {
        self.id_names.groups.get(&gid).map(String::as_str)
    }
}

#[cfg(test)]
mod tests;
