//! `pull-discard`: one pull into a sink that throws the data away, for benchmark scripts.
//! With no disk in the way it measures how fast the daemon (and, for `rsyncs://`, its TLS
//! terminator) can send: the ceiling for every client.
//!
//! ```text
//! pull-discard rsync://HOST[:PORT]/MODULE/PATH
//! RSYNC_SSL_CA_CERT=ca.crt pull-discard rsyncs://HOST[:PORT]/MODULE/PATH
//! ```
//!
//! TLS is configured as `fetch` does, from rsync-ssl's variables. Prints the bytes received.

use anyhow::Context as _;
use rsync_proto::client::{self, PullOptions, Source, TlsConnector, TlsFiles, TlsOptions};
use ubackup_benches::Discard;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .context("usage: pull-discard rsync[s]://HOST[:PORT]/MODULE/PATH")?;
    let mut opts = PullOptions::default();
    let source: Source = if url.starts_with(client::TLS_SCHEME) {
        opts.tls = Some(TlsConnector::new(&TlsOptions::from_rsync_ssl_env(
            TlsFiles::default(),
        ))?);
        Source::parse_tls(&url, client::rsync_ssl_port()?)?
    } else {
        url.parse()?
    };
    let report = client::pull(&source, &opts, &mut Discard).await?;
    println!("{} bytes received", report.stats.bytes_received);
    Ok(())
}
