//! Pull a path from an rsync daemon into a local directory.
//!
//! ```text
//! cargo run -p rsync-proto --example pull -- rsync://127.0.0.1:8730/module/ /tmp/dest
//! RSYNC_PASSWORD=secret cargo run -p rsync-proto --example pull -- rsync://user@host/module/dir/ /tmp/dest
//! ```

use rsync_proto::client::{self, FsSink, PullOptions, Source};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(src), Some(dest)) = (args.next(), args.next()) else {
        eprintln!("usage: pull SOURCE DEST   (SOURCE = rsync://[USER@]HOST[:PORT]/MODULE[/PATH])");
        std::process::exit(1);
    };
    let source: Source = src.parse()?;
    let opts = PullOptions {
        recursive: true,
        password: std::env::var("RSYNC_PASSWORD").ok().map(String::into_bytes),
        ..PullOptions::default()
    };
    let mut sink = FsSink::new(dest)?;
    let report = client::pull(&source, &opts, &mut sink).await?;
    let s = report.stats;
    println!(
        "{} files, {} bytes of file data, {} bytes received, protocol {}, checksum {}",
        s.files_transferred,
        s.literal_bytes,
        s.bytes_received,
        report.session.map(|i| i.protocol.get()).unwrap_or_default(),
        report.session.map(|i| i.checksum.name()).unwrap_or("?"),
    );
    Ok(())
}
