//! Per-address rate limits for the routes that need no token: account sign-up
//! (`POST /v1/contributors`) makes an account per request, so one address gets a bucket of
//! `burst` sign-ups that refills at `per_minute`; past it the answer is 429 `rate_limited` with
//! `Retry-After`.

use crate::api::ApiError;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::middleware::NoOpMiddleware;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tower_governor::GovernorError;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;

/// How many requests one client address may make: `burst` at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub per_minute: u32,
}

/// A route layer enforcing a [`RateLimit`].
pub type Layer = tower_governor::GovernorLayer<ClientKey, NoOpMiddleware, Body>;

/// The client's address: its IP, or for IPv6 its /64 (one host usually holds a whole /64).
/// The peer address, not a forwarded header: a coordinator behind a proxy sees the proxy.
#[derive(Debug, Clone, Copy)]
pub struct ClientKey;

impl KeyExtractor for ClientKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or(GovernorError::UnableToExtractKey)?;
        Ok(client_of(peer))
    }
}

/// The key an address is counted under.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// The layer for `limit`; `None` when it allows everything (a zero burst or rate). Spawns the
/// task that forgets idle addresses (call inside the runtime).
pub fn layer(limit: RateLimit) -> Option<Layer> {
    if limit.burst == 0 || limit.per_minute == 0 {
        return None;
    }
    let period = Duration::from_secs(60).div_f64(f64::from(limit.per_minute));
    let config = GovernorConfigBuilder::default()
        .period(period)
        .burst_size(limit.burst)
        .key_extractor(ClientKey)
        .finish()
        .expect("burst and period are not zero");
    let limiter = Arc::downgrade(config.limiter());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            let Some(l) = limiter.upgrade() else { return };
            l.retain_recent();
            l.shrink_to_fit();
        }
    });
    Some(tower_governor::GovernorLayer::new(config).error_handler(refusal))
}

/// The answer past the limit: 429 `rate_limited` in the envelope, with `Retry-After`.
fn refusal(e: GovernorError) -> Response {
    match e {
        GovernorError::TooManyRequests { wait_time, .. } => {
            let wait = wait_time.max(1);
            let mut res = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests from this address: retry in {wait} s"),
            )
            .into_response();
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            res
        }
        GovernorError::UnableToExtractKey => {
            ApiError::internal("the client's address is unknown").into_response()
        }
        GovernorError::Other { code, msg, .. } => ApiError::new(
            code,
            crate::api::code_for(code),
            msg.unwrap_or_else(|| "refused".into()),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_of(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_of(v4), v4);
    }
}
