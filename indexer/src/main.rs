//! `ubackup-indexer`: see `ubackup-indexer --help`.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ubackup_indexer::catalog::{prelude::*, Role};
use ubackup_indexer::clock::{Clock as _, SystemClock};
use ubackup_indexer::config::Config;

#[derive(Parser)]
#[command(
    name = "ubackup-indexer",
    version,
    about = "Results into a catalog, alerts, and the HTTP API"
)]
struct Cli {
    /// The TOML config.
    #[arg(
        long,
        short,
        global = true,
        default_value = "/etc/ubackup/indexer.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Consume results, evaluate alerts, serve HTTP.
    Run,
    /// Validate the config and print what it resolved to.
    CheckConfig,
    /// Apply catalog migrations.
    Migrate,
    /// Delete backups older than catalog.retention_days now.
    Prune,
    /// The registry.
    Registry {
        #[command(subcommand)]
        cmd: RegistryCmd,
    },
    /// Users.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
}

#[derive(Subcommand)]
enum RegistryCmd {
    /// Import files: .toml/.json registry files, .csv/.tsv exports of UBackup's tables,
    /// anything else as batch-add lines. All are applied together, or none.
    Import { files: Vec<PathBuf> },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add (or update) a user; the password is read from stdin.
    Add {
        name: String,
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a named bearer token for a user and print it (it is stored only hashed; the
    /// users page lists it and revokes it).
    Create {
        #[arg(long)]
        user: String,
        /// Its name in the token list.
        #[arg(long, default_value = "token create")]
        name: String,
        /// Lifetime in days (default login.token_default_secs, at most login.token_max_secs).
        #[arg(long)]
        days: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ubackup-indexer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let cfg = Config::load(&cli.config).with_context(|| format!("{}", cli.config.display()))?;
    if let Cmd::CheckConfig = cli.cmd {
        println!("{cfg:#?}");
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UBACKUP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log_level)),
        )
        // Colour only on a terminal (not journald, not a redirect).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let now = SystemClock.now_ms();
        match cli.cmd {
            Cmd::CheckConfig => Ok(()),
            Cmd::Run => {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .ok();
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {},
                        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
                    }
                    let _ = tx.send(true);
                });
                ubackup_indexer::app::run(cfg, rx).await
            }
            Cmd::Migrate => {
                ubackup_indexer::app::open_catalog(&cfg).await?;
                println!("catalog migrated");
                Ok(())
            }
            Cmd::Prune => {
                let c = ubackup_indexer::app::open_catalog(&cfg).await?;
                let n = c.prune(now - cfg.retention_days as i64 * 86_400_000).await?;
                println!("pruned {n} backups");
                Ok(())
            }
            Cmd::Registry { cmd: RegistryCmd::Import { files } } => {
                let mut imp = ubackup_indexer::registry::Import::default();
                for f in &files {
                    let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
                    let name = f.to_string_lossy();
                    imp.extend(
                        ubackup_indexer::registry::parse_file(&name, &text)
                            .with_context(|| format!("{}", f.display()))?,
                    );
                }
                let c = ubackup_indexer::app::open_catalog(&cfg).await?;
                let a = ubackup_indexer::registry::apply(&*c, imp, now).await?;
                c.audit(now, "cli", "registry.import", &serde_json::json!({"files": files.len(), "instances": a.instances}).to_string()).await?;
                println!(
                    "imported {} businesses, {} backup types, {} instances",
                    a.businesses, a.types, a.instances
                );
                Ok(())
            }
            Cmd::User { cmd: UserCmd::Add { name, role } } => {
                let role = Role::parse(&role).context("role")?;
                let mut pw = String::new();
                std::io::stdin().take(4096).read_to_string(&mut pw)?;
                let pw = pw.trim_end_matches(['\n', '\r']);
                anyhow::ensure!(pw.len() >= 8, "the password (stdin) must be at least 8 characters");
                let hash = ubackup_indexer::auth::hash_password(pw)?;
                let c = ubackup_indexer::app::open_catalog(&cfg).await?;
                c.put_user(&name, role, &hash, now).await?;
                c.audit(now, "cli", "user.add", &serde_json::json!({"name": name, "role": role}).to_string()).await?;
                println!("user {name} ({}) saved", role.name());
                Ok(())
            }
            Cmd::Token { cmd: TokenCmd::Create { user, name, days } } => {
                let name = ubackup_indexer::validate::token_name(&name)?;
                let c = ubackup_indexer::app::open_catalog(&cfg).await?;
                let u = c.user(&user).await?.with_context(|| format!("no user {user:?}"))?;
                let token = ubackup_indexer::auth::new_token();
                let expires = cfg.login.token_expiry(now, days.map(|d| d.saturating_mul(86_400)));
                let id = c.add_named_token(u.id, &name, &ubackup_indexer::auth::token_hash(&token), now, expires).await?;
                c.audit(now, "cli", "token.create", &serde_json::json!({"user": user, "id": id, "name": name, "expires_ms": expires}).to_string()).await?;
                println!("{token}");
                Ok(())
            }
        }
    })
}
