//! Credits on the command line: `runegrid account` (balance, held, earned, spent),
//! `runegrid ledger` (the account's statement; `ledger check` verifies a data directory's books),
//! `runegrid credits grant` (admin) and `runegrid price`.

use crate::commands::Conn;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use runegrid_coordinator::credits;
use runegrid_core::ledger::{EntryKey, MICROS_PER_CREDIT, Party};
use std::path::PathBuf;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AccountArgs {
    #[command(subcommand)]
    pub cmd: Option<crate::commands::AccountCmd>,
    /// Print the credits as JSON (micro-credits).
    #[arg(long)]
    pub json: bool,
}

/// `runegrid account`: the caller's credits.
pub async fn account(conn: &Conn, a: AccountArgs) -> Result<i32> {
    if let Some(cmd) = a.cmd {
        return crate::commands::account(conn, cmd).await;
    }
    let c = conn.client()?.credits().await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(0);
    }
    println!("account {}", c.account);
    println!("  balance  {}", credits(c.balance));
    println!("  held     {}  (for unfinished jobs)", credits(c.held));
    println!(
        "  earned   {}  (by your workers, for verified results)",
        credits(c.earned)
    );
    println!(
        "  spent    {}  (on your jobs, fees included)",
        credits(c.spent)
    );
    if c.balance < 0 {
        println!(
            "  the balance is below zero after a clawback: your workers earn it back before you can spend"
        );
    }
    Ok(0)
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LedgerArgs {
    #[command(subcommand)]
    pub cmd: Option<LedgerCmd>,
    /// Print the statement as JSON (micro-credits).
    #[arg(long)]
    pub json: bool,
    /// Entries per page.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Entries older than this sequence number (the `next` a previous page printed).
    #[arg(long)]
    pub before: Option<i64>,
}

#[derive(Subcommand)]
pub enum LedgerCmd {
    /// Verify a data directory's books: every transfer follows the rules, balances + holds =
    /// credits minted, finished jobs hold nothing. Exits 1 when they do not balance.
    Check {
        /// The coordinator's data directory.
        #[arg(long, default_value_os_t = crate::default_data_dir())]
        data: PathBuf,
        /// The coordinator's store, when not the data directory's SQLite file: a
        /// postgres:// URL (as given to `serve --store`).
        #[arg(
            long,
            value_name = "URL",
            env = "RUNEGRID_STORE",
            hide_env_values = true
        )]
        store: Option<runegrid_coordinator::StoreLocation>,
        #[arg(long)]
        json: bool,
    },
}

/// `runegrid ledger`: the caller's statement, newest first; `ledger check`.
pub async fn ledger(conn: &Conn, a: LedgerArgs) -> Result<i32> {
    if let Some(LedgerCmd::Check { data, store, json }) = a.cmd {
        return check(data, store.unwrap_or_default(), json);
    }
    let s = conn
        .client()?
        .ledger(a.before, a.limit.clamp(1, 1000))
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(0);
    }
    if s.entries.is_empty() {
        println!("no transfers for account {}", s.account);
        return Ok(0);
    }
    println!(
        "{:>8}  {:<29}  {:<9} {:>18}  for",
        "seq", "time", "reason", "credits"
    );
    for e in &s.entries {
        println!(
            "{:>8}  {:<29}  {:<9} {:>18}  {}",
            e.seq,
            time(e.at),
            e.reason,
            signed(e.amount),
            what(e.key, e.counterparty)
        );
    }
    if let Some(n) = s.next_before {
        println!("more: runegrid ledger --before {n}");
    }
    Ok(0)
}

fn check(data: PathBuf, store: runegrid_coordinator::StoreLocation, json: bool) -> Result<i32> {
    match runegrid_coordinator::check_books_in(&store, &data) {
        Ok(r) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "balanced": true,
                        "transfers": r.transfers,
                        "minted": r.minted,
                        "accounts": r.accounts,
                        "balances": r.balances,
                        "treasury": r.treasury,
                        "held": r.held,
                        "in_debt": r.in_debt,
                        "debt": r.debt,
                    })
                );
            } else {
                println!(
                    "the books balance: {} transfers; {} minted = {} in {} accounts + {} held for unfinished jobs + {} in the treasury",
                    r.transfers,
                    credits(r.minted),
                    credits(r.balances),
                    r.accounts,
                    credits(r.held),
                    credits(r.treasury)
                );
                if r.in_debt > 0 {
                    println!(
                        "{} accounts are in debt after clawbacks ({} in all)",
                        r.in_debt,
                        credits(r.debt)
                    );
                }
            }
            Ok(0)
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"balanced": false, "error": e.to_string()})
                );
            } else {
                eprintln!("the books do not balance: {e}");
            }
            Ok(1)
        }
    }
}

#[derive(Subcommand)]
pub enum CreditsCmd {
    /// Grant credits to an account (admin only), e.g. `credits grant alice 250` or `12.5`.
    Grant {
        account: String,
        /// Credits (up to 6 decimals).
        amount: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn credits_cmd(conn: &Conn, c: CreditsCmd) -> Result<i32> {
    match c {
        CreditsCmd::Grant {
            account,
            amount,
            json,
        } => {
            let micros = parse_credits(&amount)?;
            let c = conn.client()?.grant(&account, micros).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!(
                    "granted {} to {}: balance now {}",
                    credits(micros),
                    c.account,
                    credits(c.balance)
                );
            }
            Ok(0)
        }
    }
}

#[derive(Args)]
pub struct PriceArgs {
    #[arg(long)]
    pub json: bool,
}

/// `runegrid price`: what work costs now.
pub async fn price(conn: &Conn, a: PriceArgs) -> Result<i32> {
    let p = conn.client()?.price().await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(0);
    }
    println!(
        "{} per 10^9 fuel (base {} × demand {:.3}; {} tasks queued, {} free slots), plus a {}% fee{}",
        credits(p.price as i64),
        credits(p.base as i64),
        p.multiplier_ppm as f64 / 1e6,
        p.queued,
        p.free_slots,
        p.fee_ppm as f64 / 1e4,
        if p.charging {
            ""
        } else {
            "; this grid does not charge (earnings are still recorded)"
        }
    );
    Ok(0)
}

/// A decimal number of credits (`12`, `12.5`, `0.000001`) in micro-credits.
pub fn parse_credits(s: &str) -> Result<i64> {
    let (whole, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (!frac.is_empty() && !digits(frac)) || frac.len() > 6 {
        bail!("{s:?} is not an amount of credits: digits, and at most 6 after the point");
    }
    let whole: i64 = whole
        .parse()
        .ok()
        .and_then(|w: i64| w.checked_mul(MICROS_PER_CREDIT))
        .ok_or_else(|| anyhow::anyhow!("{s} credits is more than the ledger can count"))?;
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse()?
    };
    let micros = whole + frac;
    if micros <= 0 {
        bail!("a grant is a positive amount of credits");
    }
    Ok(micros)
}

/// `+12.5` / `-3`, in credits.
fn signed(micros: i64) -> String {
    let c = credits(micros);
    let c = c.trim_end_matches(" credits");
    if micros > 0 {
        format!("+{c}")
    } else {
        c.to_string()
    }
}

fn what(key: EntryKey, other: Party) -> String {
    match key {
        EntryKey::Welcome(_) => "welcome credits".into(),
        EntryKey::Grant(n) => format!("grant #{n}"),
        EntryKey::Hold(j) => format!("job {j}: held its worst case"),
        EntryKey::Release(j) => format!("job {j}: unspent hold returned"),
        EntryKey::Payment(a) => match other {
            Party::Escrow(j) => format!("attempt {a} of job {j}"),
            Party::Treasury => format!("attempt {a}: the grid's own work (audit or probe)"),
            _ => format!("attempt {a}"),
        },
        EntryKey::Fee(a) => format!("fee on attempt {a}"),
        EntryKey::Clawback(a) => format!("attempt {a}: payment taken back after an audit"),
    }
}

/// Milliseconds since the epoch as an HTTP date (`Thu, 03 Dec 2026 21:40:00 GMT`).
fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    httpdate::fmt_http_date(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_parse_as_exact_micros() {
        assert_eq!(parse_credits("12").unwrap(), 12_000_000);
        assert_eq!(parse_credits("12.5").unwrap(), 12_500_000);
        assert_eq!(parse_credits("0.000001").unwrap(), 1);
        for bad in [
            "",
            "-1",
            "0",
            "1.2345678",
            "1e3",
            "abc",
            ".5",
            "99999999999999999",
        ] {
            assert!(parse_credits(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(time(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
