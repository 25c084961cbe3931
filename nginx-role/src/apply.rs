//! The render loop: every change of the records, debounced, becomes one render; a render that
//! differs from the running one is checked with `nginx -t`, installed and reloaded, and counts
//! as running only once nginx serves it ([`crate::confirm`]). Anything that fails leaves the
//! running config serving and is counted, logged and kept for `GET /v1/roles/nginx/config`; a
//! reload nginx did not carry out is tried again with backoff (it heals when, say, the port
//! it needs is freed) and holds the member's readiness (`role:nginx:reload_not_served`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use std::sync::{Arc, Mutex};

use hivemind_common::backoff::Backoff;
use hivemind_common::role::{ControlPlaneClient, NginxSettings, RoleHealth, RoleReport};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::api::{unix_ms, FailureView, ReloadView, Running};
use crate::confirm::{self, CONFIRM_WITHIN};
use crate::debounce::Debounce;
use crate::nginx::{supervise, Nginx};
use crate::{model, port_holder, template, RoleState};

/// What became of one render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Served, unchanged, or refused for a reason only a change can fix (the template,
    /// `nginx -t`).
    Settled,
    /// Installed but not served: try again.
    NotServed,
}

/// The readiness reason while nginx does not serve the installed render.
pub(crate) const NOT_SERVED: &str = "reload_not_served";

pub(crate) struct Apply {
    pub(crate) shared: RoleState,
    pub(crate) nginx: Nginx,
    pub(crate) settings: NginxSettings,
    pub(crate) domain: String,
    pub(crate) health: RoleHealth,
    /// Where failures are reported (event `nginx_render_failed`).
    pub(crate) cp: Arc<dyn ControlPlaneClient>,
    /// The last error reported to the feed: a failure that repeats is counted, not re-sent.
    pub(crate) last_reported: Mutex<Option<String>>,
}

impl Apply {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        if let Err(e) = self.nginx.prepare() {
            tracing::error!(prefix = %self.nginx.prefix.display(), error = %e, "cannot prepare nginx's files; not rendering");
            self.health.waiting_for(vec![format!("nginx_prefix:{e}")]);
            return;
        }
        self.health.waiting_for(vec!["nginx:first_render".into()]);
        let state = &self.shared.state;
        if self.nginx.managed {
            tokio::spawn(supervise(
                self.nginx.clone(),
                state.pid.clone(),
                state.restarts.clone(),
                shutdown.clone(),
            ));
        }
        let (quiet, max) = self.settings.debounce;
        let mut debounce = Debounce::new(quiet, max);
        debounce.changed(Instant::now()); // the first render, at start
        let mut retry_after = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let mut retry: Option<Instant> = None;
        loop {
            let due = debounce.due();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = state.changed.notified() => debounce.changed(Instant::now()),
                _ = sleep_until(retry) => {
                    retry = None;
                    debounce.changed(Instant::now());
                }
                _ = sleep_until(due) => {}
            }
            if debounce.take(Instant::now()) {
                match self.apply_once().await {
                    Outcome::Settled => {
                        retry_after.reset();
                        retry = None;
                    }
                    Outcome::NotServed => {
                        retry = Some(Instant::now() + retry_after.next_wait());
                    }
                }
            }
        }
    }

    /// One render, applied if it differs and passes every check.
    async fn apply_once(&self) -> Outcome {
        let state = &self.shared.state;
        let template = match &self.settings.template {
            None => template::BUILT_IN.to_string(),
            // Re-read each time: an edited template applies on the next change.
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) => {
                    self.fail(format!("cannot read {}: {e}", path.display()));
                    return Outcome::Settled;
                }
            },
        };
        let book = self.shared.intake.book();
        let membership = self.shared.intake.membership();
        let services = model::services(book.records(), &membership);
        let listen = self.settings.listen.to_string();
        let text = match template::render(&template, &services, &listen, &self.domain) {
            Ok(text) => text,
            Err(e) => {
                self.fail(e.0);
                return Outcome::Settled;
            }
        };
        let hash = hex(&Sha256::digest(text.as_bytes()));
        let text = text + &confirm::status_block(self.nginx.status, &hash);
        let same = state
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|r| r.hash == hash);
        if same {
            state.unchanged.fetch_add(1, Ordering::Relaxed);
            return Outcome::Settled;
        }
        state.renders.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let candidate = match self.nginx.check(&text).await {
            Ok(candidate) => candidate,
            Err(e) => {
                self.fail(e);
                return Outcome::Settled;
            }
        };
        if let Err(e) = self.nginx.install(&candidate) {
            self.fail(format!("cannot install {}: {e}", candidate.display()));
            return Outcome::Settled;
        }
        let mark = self.nginx.error_log_mark();
        let reloaded = match self.reload().await {
            Ok(()) => confirm::served(self.nginx.status, &hash, CONFIRM_WITHIN)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        }
        .map_err(|e| self.explain(e, mark));
        let took = started.elapsed();
        state.reload_latency.observe(took);
        if reloaded.is_err() {
            // Counted and not ready before anyone can read the failure.
            state.reload_failures.fetch_add(1, Ordering::Relaxed);
            self.health.waiting_for(vec![NOT_SERVED.into()]);
        }
        *state.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(ReloadView {
            at_unix_ms: unix_ms(SystemTime::now()),
            ok: reloaded.is_ok(),
            error: reloaded.as_ref().err().cloned(),
            duration_ms: took.as_secs_f64() * 1000.0,
        });
        match reloaded {
            Ok(()) => {
                *state.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running {
                    text,
                    hash,
                    services: services.len(),
                    at: SystemTime::now(),
                });
                state.reloads.fetch_add(1, Ordering::Relaxed);
                *self.last_reported.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.health.ready();
                tracing::info!(
                    services = services.len(),
                    took_ms = took.as_millis() as u64,
                    "nginx serves the new config"
                );
                Outcome::Settled
            }
            Err(e) => {
                self.fail(e);
                Outcome::NotServed
            }
        }
    }

    /// A reload nginx did not carry out, in nginx's words where its error log has them, with
    /// the process holding the port it could not bind.
    fn explain(&self, error: String, mark: u64) -> String {
        let appended = self.nginx.error_log_since(mark);
        let Some(line) = confirm::complaint(&appended) else {
            return error;
        };
        let held = confirm::bind_failure_port(line)
            .and_then(port_holder::holder)
            .map(|h| format!("; the port is held by {h}"))
            .unwrap_or_default();
        format!("{error}: nginx: {line}{held}")
    }

    /// SIGHUP to the master; a managed nginx that is still starting is waited for (a SIGHUP
    /// before nginx installed its handlers would kill it), up to a few seconds.
    async fn reload(&self) -> Result<(), String> {
        if !self.nginx.managed {
            return self.nginx.reload(None);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pid = self.shared.state.pid.load(Ordering::Relaxed);
            let written = std::fs::read_to_string(self.nginx.prefix.join("nginx.pid"))
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            if pid != 0 && written == Some(pid) {
                return self.nginx.reload(Some(pid));
            }
            if Instant::now() >= deadline {
                return Err("the managed nginx is not running".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A render that was not applied: counted, logged, kept for the config route, and put in
    /// the event feed as `nginx_render_failed` (once per distinct error, in the background).
    fn fail(&self, error: String) {
        let state = &self.shared.state;
        state.failures.fetch_add(1, Ordering::Relaxed);
        let new = {
            let mut last = self.last_reported.lock().unwrap_or_else(|p| p.into_inner());
            let new = last.as_deref() != Some(error.as_str());
            *last = Some(error.clone());
            new
        };
        // A failure that repeats (a reload tried again) is counted, not logged again.
        if new {
            tracing::warn!(%error, "nginx render not applied; the running config keeps serving");
        } else {
            tracing::debug!(%error, "nginx render still not applied");
        }
        if new {
            let (cp, report) = (
                self.cp.clone(),
                RoleReport::NginxRenderFailed {
                    error: error.clone(),
                },
            );
            tokio::spawn(async move {
                if let Err(e) = cp.report(report).await {
                    tracing::warn!(error = %e, "cannot report nginx_render_failed to the feed");
                }
            });
        }
        *state.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(FailureView {
            at_unix_ms: unix_ms(SystemTime::now()),
            error,
        });
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
