//! TLS material for a TLS-only `redis-server`: a test CA and a server certificate it
//! signed, made with the `openssl` command-line tool.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A test CA and a server certificate it signed (for 127.0.0.1 and localhost), made with
/// the `openssl` command-line tool.
pub struct TlsFiles {
    /// The CA certificate (PEM): what `redis.ca_file` points at.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Generates a fresh CA and server certificate into `dir`.
    pub fn generate(dir: &Path) -> TlsFiles {
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the certificate extensions");
        let ca_key = dir.join("ca.key");
        let csr = dir.join("server.csr");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(&[
            &["req", "-x509", "-days", "2", "-subj", "/CN=runq test CA"],
            &ec[..],
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                path_str(&ca_key),
                "-out",
                path_str(&files.ca),
            ],
        ]);
        openssl(&[
            &["req", "-subj", "/CN=localhost"],
            &ec[..],
            &["-keyout", path_str(&files.key), "-out", path_str(&csr)],
        ]);
        openssl(&[&[
            "x509",
            "-req",
            "-days",
            "2",
            "-set_serial",
            "1",
            "-in",
            path_str(&csr),
            "-CA",
            path_str(&files.ca),
            "-CAkey",
            path_str(&ca_key),
            "-extfile",
            path_str(&ext),
            "-out",
            path_str(&files.cert),
        ]]);
        files
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Runs `openssl` with the concatenated argument groups; panics with its output on failure.
fn openssl(groups: &[&[&str]]) {
    let args: Vec<&str> = groups.iter().flat_map(|g| g.iter().copied()).collect();
    let out = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run openssl: is it installed and on PATH?");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
