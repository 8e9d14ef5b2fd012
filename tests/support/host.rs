//! Parts of the host a test borrows and gives back: a network namespace joined by a veth pair,
//! a pair of pseudo-terminals as a serial device, and a small tmpfs to run out of disk. The
//! namespace and the tmpfs need root, as CI has.

use super::wait_until;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A network namespace joined to the test's own by a veth pair: a second host for partition
/// tests. Removed on drop.
pub struct Netns {
    /// Namespace name.
    pub name: String,
    /// The veth end in the test's namespace; bringing it down cuts the namespace off.
    host_if: String,
    /// Address of the test's end, reachable from inside.
    pub host_ip: String,
    /// Address of the inside end, reachable from the test.
    pub inner_ip: String,
}

impl Netns {
    /// Creates the namespace and its link (needs root, as CI has).
    pub fn create() -> Netns {
        let id = std::process::id() % 10_000;
        let net = 1 + std::process::id() % 250;
        let ns = Netns {
            name: format!("pimesh-test-{id}"),
            host_if: format!("pmh{id}"),
            host_ip: format!("10.213.{net}.1"),
            inner_ip: format!("10.213.{net}.2"),
        };
        let inner_if = format!("pmi{id}");
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &ns.host_if])
            .status();
        ns.ip(&["netns", "add", &ns.name]);
        ns.ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &inner_if,
        ]);
        ns.ip(&["link", "set", &inner_if, "netns", &ns.name]);
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        ns.ip(&["link", "set", &ns.host_if, "up"]);
        let inner_cidr = format!("{}/24", ns.inner_ip);
        let inside: [&[&str]; 3] = [
            &["addr", "add", &inner_cidr, "dev", &inner_if],
            &["link", "set", &inner_if, "up"],
            &["link", "set", "lo", "up"],
        ];
        for args in inside {
            let mut all: Vec<&str> = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ns.ip(&all);
        }
        ns
    }

    /// Pulls the cable: nothing crosses until [`heal`](Self::heal).
    pub fn cut(&self) {
        self.ip(&["link", "set", &self.host_if, "down"]);
    }

    /// Plugs the cable back in.
    pub fn heal(&self) {
        self.ip(&["link", "set", &self.host_if, "up"]);
    }

    fn ip(&self, args: &[&str]) {
        let st = Command::new("ip")
            .args(args)
            .status()
            .expect("ip (iproute2) must be installed");
        assert!(
            st.success(),
            "ip {} failed (network namespace tests need root)",
            args.join(" ")
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A socat process joining two pseudo-terminals, linked as `<dir>/dev` and `<dir>/fake`:
/// a serial device (`dev`) whose other end a test plays (`fake`).
pub struct Socat {
    /// The socat process.
    child: Child,
    /// Where the links are.
    dir: PathBuf,
}

impl Socat {
    /// Starts socat and waits until both links exist.
    pub fn start(dir: &Path) -> Socat {
        let link = |name: &str| format!("pty,raw,echo=0,link={}", dir.join(name).display());
        let child = Command::new("socat")
            .args([&link("dev"), &link("fake")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is installed (apt package socat)");
        wait_until("socat's pty links", || {
            dir.join("dev").exists() && dir.join("fake").exists()
        });
        Socat {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Kills socat (the device "unplugged") and removes the links it leaves behind.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for name in ["dev", "fake"] {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A small tmpfs mounted on a directory, to run a disk out of space (needs root, as CI has).
/// Unmounted on drop.
pub struct Tmpfs {
    /// Where it is mounted.
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) on `path`, created if missing.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "mount tmpfs on {} (needs root, as CI has)",
            path.display()
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Fills it with `name` until the disk is full; returns the file's path.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.path.join(name);
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
