//! Greeting, module request, MOTD and authentication: the text lines before
//! the binary setup (clientserver.c `start_inband_exchange`, authenticate.c).

use crate::daemon::{self, AuthDigest, Greeting, ModuleInfo, ServerLine};
use crate::error::ProtocolError;
use crate::version::ProtocolVersion;
use crate::wire::NdxCodec;

use super::events::{Event, RefusalKind, SessionError};
use super::{Connection, State, Target};

impl Connection {
    /// With a greeting hint and no credentials, queues what would follow the daemon's
    /// greeting now (see [`ConnectionConfig::greeting_hint`]).
    pub(super) fn send_on_hint(&mut self) {
        if !matches!(self.config.target, Target::Pull { .. }) || self.config.credentials.is_some() {
            return;
        }
        let Some(hint) = self.config.greeting_hint.clone() else {
            return;
        };
        let Ok(protocol) = hint.negotiate(self.config.protocol) else {
            return;
        };
        self.assumed = Some((protocol, hint.digests.is_some()));
        self.adopt_greeting(hint, protocol);
        self.send_setup();
    }

    /// Takes `g` (the daemon's, or the hint) as the session's greeting, at `protocol`.
    pub(super) fn adopt_greeting(&mut self, g: Greeting, protocol: ProtocolVersion) {
        self.protocol = protocol;
        self.ndx_in = NdxCodec::new(protocol.compact_ndx());
        self.ndx_out = NdxCodec::new(protocol.compact_ndx());
        self.greeting = Some(g);
    }

    // ----- queries -----

    /// Reads one text line from the raw input, bounded by `max_line`.
    pub(super) fn take_line(&mut self) -> Result<Option<String>, ProtocolError> {
        let max = self.config.limits.max_line;
        match self.input.iter().position(|&b| b == b'\n') {
            Some(p) if p > max => Err(ProtocolError::LineTooLong { limit: max }),
            Some(p) => {
                let mut line: Vec<u8> = self.input.drain(..=p).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Ok(Some(String::from_utf8_lossy(&line).into_owned()))
            }
            None if self.input.len() > max => Err(ProtocolError::LineTooLong { limit: max }),
            None => Ok(None),
        }
    }

    pub(super) fn step_line(&mut self) -> Result<bool, SessionError> {
        let Some(line) = self.take_line()? else {
            return Ok(false);
        };
        match &mut self.state {
            State::Greeting => {
                let g = Greeting::parse(&line)?;
                let protocol = g.negotiate(self.config.protocol)?;
                if self
                    .assumed
                    .is_some_and(|a| a != (protocol, g.digests.is_some()))
                {
                    return Err(SessionError::GreetingChanged { greeting: g });
                }
                self.adopt_greeting(g, protocol);
                if matches!(self.config.target, Target::ListModules) {
                    self.state = State::Listing;
                } else {
                    // Without credentials no AUTHREQD can be answered, so
                    // the arguments need not wait for `@RSYNCD: OK`.
                    if self.config.credentials.is_none() && !self.args_sent {
                        self.send_setup();
                    }
                    self.state = State::ModuleReply { sent_auth: false };
                }
            }
            State::Listing => match ServerLine::parse(&line) {
                ServerLine::Exit => {
                    self.state = State::Closing;
                }
                ServerLine::Error(message) => {
                    return Err(SessionError::Refused {
                        kind: RefusalKind::classify(&message),
                        message,
                    })
                }
                ServerLine::Text(t) | ServerLine::AuthRequired(t) => {
                    // Before the first module line the daemon may send MOTD
                    // lines; rsync itself cannot tell them apart either, so
                    // lines without a tab are reported as MOTD.
                    if t.contains('\t') {
                        self.modules += 1;
                        if self.modules > self.config.limits.max_modules {
                            return Err(ProtocolError::TooManyModules {
                                limit: self.config.limits.max_modules,
                            }
                            .into());
                        }
                        self.events.push_back(Event::Module(ModuleInfo::parse(&t)));
                    } else {
                        self.motd_line(t)?;
                    }
                }
                ServerLine::Ok => {
                    return Err(ProtocolError::UnexpectedLine { line }.into());
                }
            },
            State::ModuleReply { sent_auth } => match ServerLine::parse(&line) {
                ServerLine::Ok => {
                    if !self.args_sent {
                        self.send_setup();
                    }
                    self.state = if self.protocol.has_compat_flags() {
                        State::CompatFlags
                    } else {
                        let checksum = self.default_checksum()?;
                        self.after_checksum(0, checksum, false)
                    };
                }
                ServerLine::AuthRequired(challenge) => {
                    if *sent_auth {
                        return Err(ProtocolError::UnexpectedLine { line }.into());
                    }
                    *sent_auth = true;
                    if self.args_sent {
                        // We had no credentials and sent the arguments already.
                        return Err(ProtocolError::PasswordRequired.into());
                    }
                    self.answer_challenge(&challenge)?;
                    // The daemon reads the arguments right after our answer.
                    self.send_setup();
                }
                ServerLine::Exit => return Err(SessionError::DaemonExit),
                ServerLine::Error(message) => {
                    return Err(SessionError::Refused {
                        kind: RefusalKind::classify(&message),
                        message,
                    })
                }
                ServerLine::Text(t) => self.motd_line(t)?,
            },
            _ => return Err(ProtocolError::Misuse("line in a binary state").into()),
        }
        Ok(true)
    }

    pub(super) fn motd_line(&mut self, t: String) -> Result<(), ProtocolError> {
        self.motd_bytes += t.len() + 1;
        if self.motd_bytes > self.config.limits.max_motd {
            return Err(ProtocolError::MotdTooLong {
                limit: self.config.limits.max_motd,
            });
        }
        self.events.push_back(Event::Motd(t));
        Ok(())
    }

    pub(super) fn answer_challenge(&mut self, challenge: &str) -> Result<(), ProtocolError> {
        if challenge.is_empty()
            || challenge.len() > 256
            || !challenge.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ProtocolError::BadChallenge {
                challenge: challenge.to_string(),
            });
        }
        let Some(creds) = self.config.credentials.clone() else {
            return Err(ProtocolError::PasswordRequired);
        };
        let list = self.greeting.as_ref().and_then(|g| g.digests.clone());
        let digest = AuthDigest::choose(list.as_deref(), self.protocol).ok_or_else(|| {
            ProtocolError::UnexpectedLine {
                line: format!("no common auth digest in {list:?}"),
            }
        })?;
        let resp = daemon::auth_response(&creds.user, &creds.password, challenge, digest);
        self.send_raw(&resp);
        Ok(())
    }
}
