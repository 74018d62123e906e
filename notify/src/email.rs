//! `kind = "email"`: the notification as a plain-text email through SMTP
//! (lettre on rustls + ring): STARTTLS required by default, implicit TLS or,
//! for a relay on the same host, none. SMTP 5xx answers are refused for
//! good; everything else is retried.

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use recman_config::{EmailConfig, SmtpSecurity};

use crate::message::Notification;
use crate::sink::{BoxFuture, Deliver, DeliveryError};

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    server: String,
}

impl Email {
    /// Reads the password and builds the transport (no connection yet).
    pub fn new(cfg: &EmailConfig, timeout: std::time::Duration) -> Result<Email, String> {
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| format!("from \"{}\": {e}", cfg.from))?;
        let to = cfg
            .to
            .iter()
            .map(|a| a.parse::<Mailbox>().map_err(|e| format!("to \"{a}\": {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let params = || -> Result<TlsParameters, String> {
            let mut b = TlsParameters::builder(cfg.host.clone());
            if let Some(ca) = &cfg.ca_file {
                let pem = crate::tls::read_ca(ca)?;
                let cert =
                    Certificate::from_pem(&pem).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls().map_err(|e| format!("TLS setup: {e}"))
        };
        let tls = match cfg.tls {
            SmtpSecurity::StartTls => Tls::Required(params()?),
            SmtpSecurity::Tls => Tls::Wrapper(params()?),
            SmtpSecurity::None => Tls::None,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.clone())
            .port(cfg.port)
            .tls(tls)
            .timeout(Some(timeout))
            .hello_name(ClientId::Domain("recman".into()));
        if let (Some(user), Some(pw)) = (&cfg.username, &cfg.password) {
            b = b.credentials(Credentials::new(user.clone(), pw.read()?));
        }
        Ok(Email {
            transport: b.build(),
            from,
            to,
            server: format!("{}:{}", cfg.host, cfg.port),
        })
    }
}

impl Deliver for Email {
    fn deliver<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let mut m = Message::builder().from(self.from.clone()).subject(n.subject());
            for t in &self.to {
                m = m.to(t.clone());
            }
            let msg = m
                .header(ContentType::TEXT_PLAIN)
                .body(n.text())
                .map_err(|e| DeliveryError::permanent(format!("cannot build the email: {e}")))?;
            match self.transport.send(msg).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_permanent() => {
                    Err(DeliveryError::permanent(format!("SMTP {}: {e}", self.server)))
                }
                Err(e) => Err(DeliveryError::transient(format!("SMTP {}: {e}", self.server))),
            }
        })
    }

    fn describe(&self) -> String {
        format!("email via {}", self.server)
    }
}
