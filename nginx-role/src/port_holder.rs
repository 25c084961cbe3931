//! Which process holds a TCP port (Linux `/proc`): what a failed bind names, so that an
//! operator sees "held by pid 4242 (nginx)" instead of guessing. The table parsing is sans IO
//! ([`listening_inodes`]); [`holder`] reads `/proc`.

/// The socket inodes listening on `port` in a `/proc/net/tcp` or `/proc/net/tcp6` table.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?.parse::<u64>().ok()?;
            let local_port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            (local_port == port && *state == LISTEN && inode != 0).then_some(inode)
        })
        .collect()
}

/// A process holding a socket: its pid and command name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.command)
    }
}

/// The lowest-numbered process with a listening socket on `port` (the master of a forking
/// server holds it with its workers), where `/proc` lets this process see it.
pub fn holder(port: u16) -> Option<Holder> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find_map(|pid| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
        });
        holds.then(|| Holder {
            pid,
            command: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map_or_else(|_| "?".into(), |c| c.trim().to_string()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 41414 1 0000000000000000 20 4 30 10 -1\n\
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0\n";

    #[test]
    fn only_listening_sockets_on_the_port_count() {
        assert_eq!(listening_inodes(TABLE, 8080), vec![31337]);
        assert_eq!(listening_inodes(TABLE, 22), vec![999]);
        assert!(listening_inodes(TABLE, 50000).is_empty());
        assert!(listening_inodes("", 8080).is_empty());
    }

    #[test]
    fn this_process_is_found_holding_its_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let found = holder(port).expect("this process holds the port");
        assert_eq!(found.pid, std::process::id());
        drop(listener);
        assert_eq!(holder(port), None);
    }
}
