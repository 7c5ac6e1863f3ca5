//! The `mail` channel: SMTP through lettre (tokio, rustls on ring). STARTTLS is required by
//! default (`smtp_tls = "tls"` for SMTPS, `"none"` only for a loopback relay); the server's
//! certificate is checked against the system's roots plus the channel's `ca_file`. The
//! idempotency key is the `Message-ID`, so a retried message is recognisably the same one.

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};

use super::channel::ChannelError;
use super::Message;
use crate::config::{ChannelConfig, MailConfig, MailTls};

fn err(e: impl std::fmt::Display) -> ChannelError {
    ChannelError::Mail(e.to_string())
}

/// Sends one message as a plain-text mail to every recipient.
pub async fn send(
    mail: &MailConfig,
    c: &ChannelConfig,
    m: &Message,
    idem_key: &str,
) -> Result<(), ChannelError> {
    let mut params = TlsParameters::builder(mail.host.clone());
    if let Some(path) = &c.ca_file {
        let pem = std::fs::read(path).map_err(|e| ChannelError::CaFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        params = params.add_root_certificate(Certificate::from_pem(&pem).map_err(err)?);
    }
    let params = params.build_rustls().map_err(err)?;
    let tls = match mail.tls {
        MailTls::Starttls => Tls::Required(params),
        MailTls::Tls => Tls::Wrapper(params),
        MailTls::None => Tls::None,
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(mail.host.as_str())
        .port(mail.port)
        .tls(tls)
        .timeout(Some(std::time::Duration::from_secs(c.timeout_secs)));
    if let Some(user) = &mail.username {
        b = b.credentials(Credentials::new(user.clone(), mail.password.clone()));
    }
    let transport = b.build();
    let mut email = lettre::Message::builder()
        .from(mail.from.parse().map_err(err)?)
        .subject(m.title())
        .message_id(Some(format!("<{idem_key}@ubackup>")))
        .header(ContentType::TEXT_PLAIN);
    for to in &mail.to {
        email = email.to(to.parse().map_err(err)?);
    }
    let mut text = m.text();
    text.push('\n');
    let email = email.body(text).map_err(err)?;
    // lettre's timeout covers each read and write, not a TLS handshake the server abandons
    // (aiosmtpd keeps the socket open after a refused certificate): bound the whole send.
    let limit = std::time::Duration::from_secs(c.timeout_secs.saturating_mul(3));
    tokio::time::timeout(limit, transport.send(email))
        .await
        .map_err(|_| err(format!("no answer within {limit:?}")))?
        .map_err(err)?;
    Ok(())
}
