//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`), through the `sd-notify` crate.
//!
//! [`Notifier`] tells the service manager when the worker is ready (`READY=1`), when it
//! starts to stop (`STOPPING=1`), what it is doing (`STATUS=…`) and that it is still alive
//! (`WATCHDOG=1`). Without `NOTIFY_SOCKET` in the environment (not started by systemd,
//! or started with another `Type=`) every call is a no-op, so the launcher can call it
//! unconditionally. Send failures are logged, never returned: notification is advisory
//! and must not stop a worker from running jobs.
//!
//! Use (wired by the launcher and [`crate::watchdog`]): `ready()` once every slot is
//! registered and the fetcher runs; `stopping()` when warm shutdown begins (signal or RQ
//! `shutdown` command); `watchdog()` every [`Notifier::watchdog_interval`] from a task on
//! the async runtime, until the process exits, so that a wedged runtime is restarted by
//! systemd but a Redis outage (which the worker survives by reconnecting) is not.

use sd_notify::NotifyState;
use std::time::Duration;

/// Sends state changes to systemd; a no-op when the process was not started with
/// `NOTIFY_SOCKET`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// A notifier that speaks to systemd when `NOTIFY_SOCKET` is set, and does nothing
    /// otherwise.
    pub fn from_env() -> Self {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty()),
        }
    }

    /// A notifier that never sends anything.
    pub fn disabled() -> Self {
        Notifier { enabled: false }
    }

    /// Whether notifications are sent at all.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// `READY=1`: startup is finished; `systemctl start` returns.
    pub fn ready(&self) {
        self.send(&[NotifyState::Ready], "READY=1");
    }

    /// `STOPPING=1`: shutdown has begun (the unit goes to `deactivating`).
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping], "STOPPING=1");
    }

    /// `WATCHDOG=1`: the process is alive; must come more often than `WatchdogSec=`.
    pub fn watchdog(&self) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
            tracing::debug!(error = %e, "could not send WATCHDOG=1 to systemd");
        }
    }

    /// `STATUS=<text>`: one line shown by `systemctl status`. Line breaks become spaces
    /// (a newline would end the assignment and start another).
    pub fn status(&self, text: &str) {
        if !self.enabled {
            return;
        }
        let line = text.replace(['\n', '\r'], " ");
        self.send(&[NotifyState::Status(&line)], "STATUS");
    }

    /// How often to call [`watchdog`](Self::watchdog): half of `WATCHDOG_USEC`, as
    /// sd_watchdog_enabled(3) recommends, when systemd asked this process (not a parent
    /// or child: `WATCHDOG_PID`, when set, must be our pid) for keep-alives. `None` when
    /// the watchdog is off or notifications are disabled.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        sd_notify::watchdog_enabled()
            .filter(|d| !d.is_zero())
            .map(|d| d / 2)
    }

    fn send(&self, states: &[NotifyState], what: &str) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "could not send {what} to systemd");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::path::PathBuf;
    use std::sync::Mutex;

    /// The process environment is shared by every test thread: hold this while touching it.
    static ENV: Mutex<()> = Mutex::new(());

    /// A datagram socket bound at a fresh temporary path, removed on drop.
    struct Listener {
        sock: UnixDatagram,
        path: PathBuf,
    }

    impl Listener {
        fn bind(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let path = std::env::temp_dir().join(format!(
                "runq-notify-{tag}-{}-{nanos}.sock",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&path);
            let sock = UnixDatagram::bind(&path).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Listener { sock, path }
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.sock.recv(&mut buf).expect("a datagram");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }

        fn nothing_pending(&self) -> bool {
            self.sock.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            let none = self.sock.recv(&mut buf).is_err();
            self.sock.set_nonblocking(false).unwrap();
            none
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn clear_env() {
        std::env::remove_var("NOTIFY_SOCKET");
        std::env::remove_var("WATCHDOG_USEC");
        std::env::remove_var("WATCHDOG_PID");
    }

    #[test]
    fn sends_ready_watchdog_stopping_in_order() {
        let _guard = ENV.lock().unwrap_or_else(|p| p.into_inner());
        let listener = Listener::bind("order");
        std::env::set_var("NOTIFY_SOCKET", &listener.path);
        let n = Notifier::from_env();
        assert!(n.is_enabled());
        n.ready();
        n.watchdog();
        n.stopping();
        clear_env();
        assert_eq!(listener.recv(), "READY=1\n");
        assert_eq!(listener.recv(), "WATCHDOG=1\n");
        assert_eq!(listener.recv(), "STOPPING=1\n");
        assert!(listener.nothing_pending());
    }

    #[test]
    fn status_is_one_line() {
        let _guard = ENV.lock().unwrap_or_else(|p| p.into_inner());
        let listener = Listener::bind("status");
        std::env::set_var("NOTIFY_SOCKET", &listener.path);
        let n = Notifier::from_env();
        n.status("4 slots, 1 busy\nqueues: default");
        clear_env();
        assert_eq!(listener.recv(), "STATUS=4 slots, 1 busy queues: default\n");
    }

    #[test]
    fn no_socket_means_no_op() {
        let _guard = ENV.lock().unwrap_or_else(|p| p.into_inner());
        clear_env();
        std::env::set_var("WATCHDOG_USEC", "60000000");
        let n = Notifier::from_env();
        assert!(!n.is_enabled());
        n.ready();
        n.watchdog();
        n.status("idle");
        n.stopping();
        assert_eq!(n.watchdog_interval(), None);
        assert!(!Notifier::disabled().is_enabled());
        clear_env();
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec_for_this_pid() {
        let _guard = ENV.lock().unwrap_or_else(|p| p.into_inner());
        let listener = Listener::bind("watchdog");
        std::env::set_var("NOTIFY_SOCKET", &listener.path);
        let n = Notifier::from_env();

        std::env::set_var("WATCHDOG_USEC", "60000000");
        std::env::remove_var("WATCHDOG_PID");
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(30)));

        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(30)));

        // Meant for another process (e.g. inherited from a parent): not ours to answer.
        std::env::set_var("WATCHDOG_PID", (std::process::id() + 1).to_string());
        assert_eq!(n.watchdog_interval(), None);

        std::env::remove_var("WATCHDOG_USEC");
        std::env::remove_var("WATCHDOG_PID");
        assert_eq!(n.watchdog_interval(), None);
        clear_env();
    }
}
