//! The API token: read from a file or `CANARY_TOKEN`, or generated at first
//! start and kept in a 0600 file; compared in constant time.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Where the token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOrigin {
    /// `--token-file`, or the default file, read.
    File(PathBuf),
    /// The `CANARY_TOKEN` variable.
    Env,
    /// Generated now and written to this file (print it once).
    Generated(PathBuf),
}

/// The bearer token mutating calls must present.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The shortest token accepted.
const MIN_LEN: usize = 16;

impl Token {
    /// A token from text (trimmed).
    ///
    /// # Errors
    /// When it is shorter than 16 characters or holds whitespace or
    /// control characters.
    pub fn new(text: &str) -> Result<Token, String> {
        let t = text.trim();
        if t.len() < MIN_LEN {
            return Err(format!("the token must be at least {MIN_LEN} characters"));
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the token must not hold spaces or control characters".into());
        }
        Ok(Token(t.to_string()))
    }

    /// The token's text (to print once, or to hand to a client).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header value carries this token, in time
    /// independent of where they differ.
    pub fn accepts(&self, header: Option<&[u8]>) -> bool {
        let Some(h) = header else { return false };
        let Some(given) = h.strip_prefix(b"Bearer ") else {
            return false;
        };
        bool::from(given.ct_eq(self.0.as_bytes()))
    }

    /// The token to use: `file` if given (it must exist), else
    /// `CANARY_TOKEN` (`env`), else `default_file` if it exists, else a new
    /// random token written to `default_file` with mode 0600.
    ///
    /// # Errors
    /// An unreadable or too short token, a file that cannot be written.
    pub fn load(
        file: Option<&Path>,
        env: Option<String>,
        default_file: &Path,
    ) -> Result<(Token, TokenOrigin), String> {
        if let Some(f) = file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("--token-file {}: {e}", f.display()))?;
            let t = Token::new(&text).map_err(|e| format!("--token-file {}: {e}", f.display()))?;
            return Ok((t, TokenOrigin::File(f.to_path_buf())));
        }
        if let Some(v) = env.filter(|v| !v.is_empty()) {
            return Ok((
                Token::new(&v).map_err(|e| format!("CANARY_TOKEN: {e}"))?,
                TokenOrigin::Env,
            ));
        }
        if default_file.exists() {
            let text = std::fs::read_to_string(default_file)
                .map_err(|e| format!("{}: {e}", default_file.display()))?;
            let t = Token::new(&text).map_err(|e| format!("{}: {e}", default_file.display()))?;
            return Ok((t, TokenOrigin::File(default_file.to_path_buf())));
        }
        let t = Token::generate()?;
        write_private(default_file, &t.0)?;
        Ok((t, TokenOrigin::Generated(default_file.to_path_buf())))
    }

    /// A new random token: 24 bytes from the operating system, in hex.
    ///
    /// # Errors
    /// When the system has no randomness to give.
    pub fn generate() -> Result<Token, String> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).map_err(|e| format!("cannot draw a random token: {e}"))?;
        Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }
}

/// Writes `text` to a new file readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o
        .open(path)
        .map_err(|e| format!("cannot write the token to {}: {e}", path.display()))?;
    f.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write the token to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let t = Token::new("0123456789abcdef0123").unwrap();
        assert!(t.accepts(Some(b"Bearer 0123456789abcdef0123")));
        for bad in [
            &b"Bearer 0123456789abcdef012"[..],
            b"Bearer 0123456789abcdef01234",
            b"bearer 0123456789abcdef0123",
            b"0123456789abcdef0123",
            b"Bearer ",
            b"",
        ] {
            assert!(!t.accepts(Some(bad)), "{}", String::from_utf8_lossy(bad));
        }
        assert!(!t.accepts(None));
        assert!(Token::new("short").is_err());
        assert!(Token::new("has a space in it, long").is_err());
    }

    #[test]
    fn a_generated_token_is_kept_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("canary-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        let (t, o) = Token::load(None, None, &f).unwrap();
        assert_eq!(o, TokenOrigin::Generated(f.clone()));
        assert_eq!(t.expose().len(), 48);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, o) = Token::load(None, None, &f).unwrap();
        assert_eq!(again.expose(), t.expose());
        assert_eq!(o, TokenOrigin::File(f.clone()));
        let (env, o) = Token::load(None, Some("from-the-environment".into()), &f).unwrap();
        assert_eq!(env.expose(), "from-the-environment");
        assert_eq!(o, TokenOrigin::Env);
        assert!(Token::load(Some(&dir.join("missing")), None, &f).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
