//! `runegrid relay`: a relay in this process (`runegrid_relay`).

use crate::commands::{Conn, parse_bytes};
use anyhow::{Context, Result};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Name of the file, in the relay's data directory, where it writes the URL it listens on.
pub const URL_FILE: &str = "relay.url";

#[derive(Args)]
pub struct RelayArgs {
    /// The coordinator's URL (the relay's one upstream connection goes there), or several
    /// separated by commas: coordinators sharing one database, of which the relay follows the
    /// active one.
    #[arg(long)]
    pub upstream: String,
    /// Address workers connect to (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7071")]
    pub listen: SocketAddr,
    /// Where the relay keeps its blob cache (DATA/blobs) and writes the URL it listens on.
    #[arg(long, default_value = ".runegrid/relay")]
    pub data: PathBuf,
    /// Disk space for cached blobs: bytes, or with a K, M, G or T suffix (powers of 1024).
    #[arg(long, default_value = "8G", value_parser = parse_bytes)]
    pub blob_space: u64,
    /// Fault injection for tests: `flip-result` alters every result it forwards, `alter-input`
    /// every assignment (its seed), `forge-failure` replaces every result by an unsigned failure.
    #[arg(long, hide = true)]
    pub misbehave: Option<runegrid_relay::Misbehaviour>,
}

pub async fn run(conn: &Conn, a: RelayArgs) -> Result<i32> {
    crate::node::raise_fd_limit();
    std::fs::create_dir_all(&a.data).with_context(|| format!("creating {}", a.data.display()))?;
    let config = runegrid_relay::RelayConfig {
        upstream: a.upstream,
        token: conn.token()?,
        data_dir: a.data.clone(),
        blob_space: a.blob_space,
        misbehaviour: a.misbehave,
    };
    let running = runegrid_relay::start(config, a.listen).await?;
    let url = format!("http://{}", running.addr);
    let tmp = a.data.join(format!("{URL_FILE}.tmp"));
    std::fs::write(&tmp, &url)
        .and_then(|()| std::fs::rename(&tmp, a.data.join(URL_FILE)))
        .context("writing the relay url file")?;
    eprintln!("runegrid relay listening on {url}");
    tokio::select! {
        r = running.server => { r??; }
        _ = tokio::signal::ctrl_c() => { eprintln!("relay stopping"); }
    }
    Ok(0)
}
