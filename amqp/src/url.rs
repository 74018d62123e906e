//! AMQP URLs: where they come from (flag, config, `RECMAN_AMQP_URL`), the
//! password from a file, and redaction so a password never reaches a log or an error.

use std::path::Path;

/// The environment variable that holds the broker URL when no flag gives one.
pub const URL_ENV: &str = "RECMAN_AMQP_URL";

/// `amqp://user:secret@host/vhost` → `amqp://user:***@host/vhost` (and the
/// same for `amqps://`). A URL without a password comes back unchanged.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rfind('@') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{host}"),
        None => url.to_string(),
    }
}

/// Removes every occurrence of the URL's password (raw and as written) from
/// `text`: for errors from libraries that may quote the URL.
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact(url));
    if let Some(pw) = password(url) {
        if pw.len() >= 3 {
            out = out.replace(&pw, "***");
        }
    }
    out
}

fn password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let auth = &rest[..rest.rfind('@')?];
    Some(auth.split_once(':')?.1.to_string())
}

/// Percent-encodes what an AMQP URL's userinfo cannot hold literally.
fn encode_userinfo(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Puts `password` into `url` (replacing any password it has). The URL must
/// name a user: `amqp://recman@host/vhost`.
pub fn with_password(url: &str, password: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("not an AMQP URL (no scheme): {}", redact(url)))?;
    let at = rest.rfind('@').ok_or_else(|| {
        format!(
            "a password file needs a user in the URL (amqp://USER@host/vhost): {}",
            redact(url)
        )
    })?;
    let user = rest[..at].split(':').next().unwrap_or_default();
    Ok(format!(
        "{scheme}://{user}:{}{}",
        encode_userinfo(password),
        &rest[at..]
    ))
}

/// Reads a password file: its first line, without the line end.
pub fn read_password_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the AMQP password file {}: {e}", path.display()))?;
    let pw = text.lines().next().unwrap_or_default().to_string();
    if pw.is_empty() {
        return Err(format!("the AMQP password file {} is empty", path.display()));
    }
    Ok(pw)
}

/// The URL to use: the flag, else the config's, else `RECMAN_AMQP_URL`; then
/// the password from `password_file` when one is given.
pub fn resolve(
    flag: Option<&str>,
    config: Option<&str>,
    password_file: Option<&Path>,
) -> Result<String, String> {
    let flags: Vec<String> = flag.into_iter().map(str::to_string).collect();
    let config: Vec<String> = config.into_iter().map(str::to_string).collect();
    let mut urls = resolve_all(&flags, &config, password_file)?;
    Ok(urls.swap_remove(0))
}

/// The broker URLs to use, one per node of a cluster: the flags (`--amqp`
/// repeated), else the config's (`[amqp] urls` or `url`), else
/// `RECMAN_AMQP_URL` (several separated by spaces or commas); then the
/// password from `password_file` put into each. Never empty.
pub fn resolve_all(
    flags: &[String],
    config: &[String],
    password_file: Option<&Path>,
) -> Result<Vec<String>, String> {
    let urls: Vec<String> = if !flags.is_empty() {
        flags.to_vec()
    } else if !config.is_empty() {
        config.to_vec()
    } else {
        std::env::var(URL_ENV)
            .unwrap_or_default()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    if urls.is_empty() {
        return Err(format!(
            "no broker URL: pass --amqp amqp://USER@HOST:5672/VHOST (once per node of a cluster), \
             set {URL_ENV}, or write [amqp] url (or urls) in the config"
        ));
    }
    let password = password_file.map(read_password_file).transpose()?;
    urls.into_iter()
        .map(|url| {
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                return Err(format!(
                    "the broker URL must start with amqp:// or amqps://: {}",
                    redact(&url)
                ));
            }
            match &password {
                Some(pw) => with_password(&url, pw),
                None => Ok(url),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_only() {
        assert_eq!(redact("amqp://u:s3cr3t@h:5672/v"), "amqp://u:***@h:5672/v");
        assert_eq!(redact("amqps://u:p@ss@h/v"), "amqps://u:***@h/v");
        assert_eq!(redact("amqp://h:5672/v"), "amqp://h:5672/v");
        assert_eq!(redact("amqp://u@h/v"), "amqp://u@h/v");
        let e = scrub(
            "cannot connect to amqp://u:s3cr3t@h/v: s3cr3t refused",
            "amqp://u:s3cr3t@h/v",
        );
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn password_from_a_file_is_encoded_into_the_url() {
        let u = with_password("amqp://recman@127.0.0.1:5672/v", "a:b@c/d").unwrap();
        assert_eq!(u, "amqp://recman:a%3Ab%40c%2Fd@127.0.0.1:5672/v");
        let u = with_password("amqp://recman:old@h/v", "new").unwrap();
        assert_eq!(u, "amqp://recman:new@h/v");
        assert!(with_password("amqp://h/v", "x").is_err());
    }

    #[test]
    fn flag_beats_config_and_scheme_is_checked() {
        assert_eq!(
            resolve(Some("amqp://a@h/v"), Some("amqp://b@h/v"), None).unwrap(),
            "amqp://a@h/v"
        );
        assert_eq!(resolve(None, Some("amqp://b@h/v"), None).unwrap(), "amqp://b@h/v");
        let e = resolve(Some("http://u:pw123@h"), None, None).unwrap_err();
        assert!(e.contains("amqp://") && !e.contains("pw123"), "{e}");
    }

    #[test]
    fn several_urls_each_get_the_password() {
        let dir = std::env::temp_dir().join(format!("recman-url-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let flags = vec!["amqp://r@n1/v".to_string(), "amqp://r@n2/v".to_string()];
        let config = vec!["amqp://r@other/v".to_string()];
        let urls = resolve_all(&flags, &config, Some(&pw)).unwrap();
        assert_eq!(urls, vec!["amqp://r:s3cret@n1/v", "amqp://r:s3cret@n2/v"]);
        assert_eq!(resolve_all(&[], &config, None).unwrap(), config);
        let e = resolve_all(&["amqp://r@n1/v".into(), "nope".into()], &[], None).unwrap_err();
        assert!(e.contains("nope"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
