//! Setup after `@RSYNCD: OK`: the argument list, compat flags, checksum and
//! compression negotiation, and the checksum seed (compat.c `setup_protocol`).

use crate::checksum::ChecksumKind;
use crate::delta::CompressionKind;
use crate::error::ProtocolError;
use crate::flist::{FlistDecoder, FlistOptions};
use crate::mux::{encode_frame, Demuxer, MessageCode};
use crate::setup::compat;
use crate::wire::{self, Reader};

use super::events::{Event, SessionError, SessionInfo};
use super::{Connection, State, Target};

impl Connection {
    /// Queues the argument list and, when the daemon's answers cannot change
    /// them, what the daemon reads after it: our checksum and compression
    /// lists and the (empty) filter list. The daemon reads each of these with
    /// exact-length reads from the socket before it buffers any input
    /// (clientserver.c `rsync_module` → compat.c `setup_protocol`
    /// `negotiate_the_strings` → main.c `start_server` `recv_filter_list`), so
    /// bytes sent early wait in the socket for it. Stock rsync waits for
    /// `@RSYNCD: OK`, then for the compat flags, then for the seed: three
    /// round trips this saves.
    ///
    /// The lists are sent early only when the outcome is known: the greeting
    /// carried a digest list (3.2+ daemons, which set CF_VARINT_FLIST_FLAGS
    /// for our `v` and so negotiate), or the protocol is below 30 (no lists
    /// at all). A 3.0/3.1 daemon (no digest list) decides by its own
    /// version, so for it we wait for the compat flags as stock rsync does.
    pub(super) fn send_setup(&mut self) {
        let paths = match &self.config.target {
            Target::Pull { paths, .. } => paths.clone(),
            Target::ListModules => Vec::new(),
        };
        let args = self.config.args.encode(self.protocol, &paths);
        self.send_raw(&args);
        self.args_sent = true;
        let has_digests = self.greeting.as_ref().is_some_and(|g| g.digests.is_some());
        if self.protocol.has_compat_flags() && !has_digests {
            return;
        }
        if self.protocol.has_compat_flags() {
            let lists = self.negotiation_lists(true);
            self.send_raw(&lists);
        }
        let filter = 0i32.to_le_bytes();
        if self.protocol.client_output_multiplexed() {
            encode_frame(MessageCode::DATA, &filter, &mut self.out_raw);
        } else {
            self.send_raw(&filter);
        }
        self.pipelined = true;
    }

    /// Our checksum and compression lists (compat.c `negotiate_the_strings`),
    /// each only when not forced, when the daemon negotiates.
    pub(super) fn negotiation_lists(&self, negotiate: bool) -> Vec<u8> {
        let mut lists = Vec::new();
        if negotiate && self.config.args.checksum_choice.is_none() {
            wire::put_vstring(&mut lists, ChecksumKind::advertised_list().as_bytes());
        }
        if negotiate
            && self
                .config
                .args
                .compress
                .is_some_and(|c| c.choice.is_none())
        {
            wire::put_vstring(&mut lists, CompressionKind::advertised_list().as_bytes());
        }
        lists
    }

    /// The checksum when no name list is exchanged: a forced choice, else
    /// md5 at >= 30 and old md4 below (checksum.c parse_csum_name).
    pub(super) fn default_checksum(&self) -> Result<ChecksumKind, ProtocolError> {
        if self.protocol.default_checksum_is_md5() {
            match self.config.args.checksum_choice {
                Some(k) => Ok(k),
                None => Ok(ChecksumKind::Md5),
            }
        } else {
            match self.config.args.checksum_choice {
                None | Some(ChecksumKind::Md4) | Some(ChecksumKind::Md4Old) => {
                    Ok(ChecksumKind::Md4Old)
                }
                Some(_) => Err(ProtocolError::Unsupported {
                    version: self.protocol,
                    feature: "a checksum other than md4",
                }),
            }
        }
    }

    pub(super) fn step_setup(&mut self) -> Result<bool, SessionError> {
        let mut r = Reader::new(&self.input);
        match self.state {
            State::CompatFlags => {
                let Some(flags) = wire::finish(r.varint())? else {
                    return Ok(false);
                };
                let flags = flags as u32;
                let used = r.pos();
                self.input.drain(..used);
                if flags & compat::INC_RECURSE != 0 {
                    // We never send `i`; a server that turns it on anyway is broken.
                    return Err(ProtocolError::UnrequestedFeature {
                        name: String::new(),
                        feature: "incremental recursion",
                    }
                    .into());
                }
                // compat.c negotiate_the_strings: both lists go out before
                // either is read; each is sent only when not forced.
                let negotiate = flags & compat::VARINT_FLIST_FLAGS != 0;
                let checksum_list = negotiate && self.config.args.checksum_choice.is_none();
                let compress_list = negotiate
                    && self
                        .config
                        .args
                        .compress
                        .is_some_and(|c| c.choice.is_none());
                if self.pipelined {
                    // Our lists went out because the greeting promised a negotiating
                    // daemon. One that does not negotiate after all is a daemon that
                    // refused our arguments (it sends default flags, the seed and its
                    // error: keep reading for its words), or a broken one: refused
                    // as soon as it sends a file list.
                    self.negotiation_refused = !negotiate;
                } else {
                    let lists = self.negotiation_lists(negotiate);
                    self.send_raw(&lists);
                }
                if checksum_list {
                    self.state = State::ChecksumList {
                        compat: flags,
                        compress_list,
                    };
                } else {
                    let checksum = self.default_checksum()?;
                    self.state = self.after_checksum(flags, checksum, compress_list);
                }
            }
            State::ChecksumList {
                compat,
                compress_list,
            } => {
                let Some(list) = wire::finish(r.vstring(1024))? else {
                    return Ok(false);
                };
                let list = String::from_utf8_lossy(list).into_owned();
                let used = r.pos();
                self.input.drain(..used);
                let checksum = ChecksumKind::choose(&list)
                    .ok_or(ProtocolError::NoCommonChecksum { offered: list })?;
                self.state = self.after_checksum(compat, checksum, compress_list);
            }
            State::CompressList { compat, checksum } => {
                let Some(list) = wire::finish(r.vstring(1024))? else {
                    return Ok(false);
                };
                let list = String::from_utf8_lossy(list).into_owned();
                let used = r.pos();
                self.input.drain(..used);
                let kind = CompressionKind::choose(&list)
                    .ok_or(ProtocolError::NoCommonCompression { offered: list })?;
                self.state = State::Seed {
                    compat,
                    checksum,
                    compression: self.level_filter(kind),
                };
            }
            State::Seed {
                compat: cf,
                checksum,
                compression,
            } => {
                let Some(seed) = wire::finish(r.i32())? else {
                    return Ok(false);
                };
                self.input.drain(..4);
                let info = SessionInfo {
                    protocol: self.protocol,
                    checksum,
                    compat_flags: cf,
                    seed,
                    compression,
                };
                self.info = Some(info);
                self.events.push_back(Event::Ready(info));
                // From here the server's output is multiplexed; ours too at >= 30.
                self.demux = Some(Demuxer::new(
                    self.config.limits.max_message,
                    self.config.limits.max_frame,
                ));
                self.mux_out = self.protocol.client_output_multiplexed();
                // The (empty) filter list (exclude.c send_filter_list),
                // unless it went out with the arguments.
                if !self.pipelined {
                    self.send(&0i32.to_le_bytes());
                }
                let safe = cf & compat::SAFE_FLIST != 0 || self.protocol.always_safe_flist();
                let opts = self.flist_options(cf, safe);
                self.state = State::FileList {
                    decoder: Box::new(FlistDecoder::new(opts, self.config.limits.clone())),
                    entries: Vec::new(),
                    io_error: 0,
                    name_bytes: 0,
                };
            }
            _ => return Err(ProtocolError::Misuse("setup step outside setup").into()),
        }
        Ok(true)
    }

    /// The state after the checksum is known: the compression list to read,
    /// or the seed with the compression fixed without negotiation (a forced
    /// choice, or zlib for a plain `-z` to a peer that cannot negotiate:
    /// compat.c parse_compress_choice).
    pub(super) fn after_checksum(
        &self,
        compat: u32,
        checksum: ChecksumKind,
        compress_list: bool,
    ) -> State {
        if compress_list {
            return State::CompressList { compat, checksum };
        }
        let compression = self
            .config
            .args
            .compress
            .map(|c| c.choice.unwrap_or(CompressionKind::Zlib))
            .and_then(|k| self.level_filter(k));
        State::Seed {
            compat,
            checksum,
            compression,
        }
    }

    /// `--compress-level=0` turns zlib off on both sides (token.c
    /// init_compression_level).
    pub(super) fn level_filter(&self, kind: CompressionKind) -> Option<CompressionKind> {
        let level = self.config.args.compress.and_then(|c| c.level);
        match level {
            Some(l) if kind.level_turns_off(l) => None,
            _ => Some(kind),
        }
    }

    pub(super) fn flist_options(&self, cf: u32, safe: bool) -> FlistOptions {
        FlistOptions {
            protocol: self.protocol,
            varint_flags: cf & compat::VARINT_FLIST_FLAGS != 0,
            safe_flist: safe,
            preserve_links: self.config.args.links,
            preserve_uid: self.config.args.owner,
            preserve_gid: self.config.args.group,
            id0_names: cf & compat::ID0_NAMES != 0,
        }
    }
}
