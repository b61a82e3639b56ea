//! The agent's side of FleetLock: ask for the reboot slot before
//! rebooting, give it back after a good boot.

use std::time::Duration;

use anyhow::{Context, Result};

use super::{ClientParams, Refusal, Request, PRE_REBOOT, PROTOCOL_HEADER, STEADY_STATE};

/// Longest answer read.
const MAX_RESPONSE: u64 = 64 << 10;

/// A FleetLock server, as one machine of one group talks to it.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    params: ClientParams,
    agent: ureq::Agent,
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: the slot is ours (pre-reboot) or given back (steady-state).
    Granted,
    /// Any other status, with the server's reason.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The body's `kind` and `value` (or the body as it came).
        refusal: Refusal,
    },
}

impl Client {
    /// A client of the server at `base_url` (`http://`; TLS is not
    /// supported yet) for machine `id` in `group`.
    pub fn new(base_url: &str, id: &str, group: &str) -> Result<Client> {
        if !base_url.starts_with("http://") {
            anyhow::bail!(
                "The FleetLock URL must start with http:// (TLS is not supported yet): {base_url:?}"
            );
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        Ok(Client {
            base: base_url.trim_end_matches('/').to_string(),
            params: ClientParams {
                id: id.to_string(),
                group: group.to_string(),
            },
            agent: config.new_agent(),
        })
    }

    /// `POST /v1/pre-reboot`.
    pub fn pre_reboot(&self) -> Result<Answer> {
        self.post(PRE_REBOOT)
    }

    /// `POST /v1/steady-state`.
    pub fn steady_state(&self) -> Result<Answer> {
        self.post(STEADY_STATE)
    }

    fn post(&self, path: &str) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let body = serde_json::to_string(&Request {
            client_params: self.params.clone(),
        })?;
        let mut resp = self
            .agent
            .post(&url)
            .header(PROTOCOL_HEADER, "true")
            .header("content-type", "application/json")
            .send(body)
            .with_context(|| format!("FleetLock request to {url}"))?;
        let status = resp.status().as_u16();
        if status == 200 {
            return Ok(Answer::Granted);
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_string()
            .unwrap_or_default();
        let refusal = serde_json::from_str(&text).unwrap_or(Refusal {
            kind: "unknown".into(),
            value: text.trim().to_string(),
        });
        Ok(Answer::Refused { status, refusal })
    }
}

/// Waits between tries: from `first`, doubling up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starting at `first`, never above `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            next: first.min(max),
            max,
        }
    }
}

impl Iterator for Backoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(d)
    }
}

/// Asks for the slot until it is granted, sleeping (`sleep`) for each
/// `backoff` step between refusals and failed requests, at most `tries`
/// times. Returns the last answer (`Granted`, or the last refusal) and
/// how many requests were made; an error only if the last try failed.
pub fn lock_with_retries(
    client: &Client,
    backoff: Backoff,
    tries: usize,
    mut sleep: impl FnMut(Duration),
) -> Result<(Answer, usize)> {
    let mut waits = backoff;
    let mut last = None;
    for n in 1..=tries.max(1) {
        let r = client.pre_reboot();
        if matches!(r, Ok(Answer::Granted)) {
            return Ok((Answer::Granted, n));
        }
        if let Err(e) = &r {
            tracing::debug!("FleetLock pre-reboot failed: {e:#}");
        }
        last = Some(r);
        if n < tries {
            sleep(waits.next().unwrap_or_default());
        }
    }
    let last = last.context("no try made")??;
    Ok((last, tries.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let v: Vec<u64> = b.take(5).map(|d| d.as_secs()).collect();
        assert_eq!(v, [1, 2, 4, 5, 5]);
    }
}
