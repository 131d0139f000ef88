//! A Eureka REST client (JSON), as Spring Cloud's eureka-client speaks it: register, renew,
//! cancel, and read one application's instances (docs/eureka.md).

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::http::{Body, Http, enc};
use crate::load::Failure;

#[derive(Clone)]
pub struct EurekaClient {
    http: Http,
}

impl EurekaClient {
    /// A client of the Eureka API on the HTTP port `addr` (`host:port`).
    pub fn new(addr: &str) -> EurekaClient {
        EurekaClient {
            http: Http::new(addr),
        }
    }

    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
        want: StatusCode,
    ) -> Result<bytes::Bytes, Failure> {
        let (status, bytes) = self.http.call(method, path, body).await?;
        if status == want {
            Ok(bytes)
        } else {
            let endpoint = path.split('?').next().unwrap_or(path);
            Err(Failure::new(
                format!("HTTP_{}", status.as_u16()),
                format!("{endpoint}: {}", String::from_utf8_lossy(&bytes).trim()),
            ))
        }
    }

    /// Registers an UP instance of `app` with the given lease settings.
    pub async fn register(
        &self,
        app: &str,
        id: &str,
        ip: &str,
        port: u16,
        renew_s: u64,
        duration_s: u64,
    ) -> Result<(), Failure> {
        let app = app.to_uppercase();
        let body = json!({"instance": {
            "instanceId": id, "app": app, "hostName": ip, "ipAddr": ip, "status": "UP",
            "port": {"$": port, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
            "vipAddress": app.to_lowercase(), "secureVipAddress": app.to_lowercase(),
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
            "leaseInfo": {"renewalIntervalInSecs": renew_s, "durationInSecs": duration_s},
        }});
        let path = format!("/eureka/apps/{}", enc(&app));
        let body = serde_json::to_vec(&body).expect("json");
        self.expect(
            Method::POST,
            &path,
            Body::Json(body),
            StatusCode::NO_CONTENT,
        )
        .await
        .map(drop)
    }

    /// Renews an instance's lease (a heartbeat).
    pub async fn renew(&self, app: &str, id: &str) -> Result<(), Failure> {
        let path = format!(
            "/eureka/apps/{}/{}?status=UP",
            enc(&app.to_uppercase()),
            enc(id)
        );
        self.expect(Method::PUT, &path, Body::Empty, StatusCode::OK)
            .await
            .map(drop)
    }

    /// Cancels an instance's lease.
    pub async fn cancel(&self, app: &str, id: &str) -> Result<(), Failure> {
        let path = format!("/eureka/apps/{}/{}", enc(&app.to_uppercase()), enc(id));
        self.expect(Method::DELETE, &path, Body::Empty, StatusCode::OK)
            .await
            .map(drop)
    }

    /// The ports of `app`'s instances (none when the application is unknown).
    pub async fn ports(&self, app: &str) -> Result<Vec<u16>, Failure> {
        let path = format!("/eureka/apps/{}", enc(&app.to_uppercase()));
        let (status, bytes) = self.http.call(Method::GET, &path, Body::Empty).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if status != StatusCode::OK {
            return Err(Failure::new(
                format!("HTTP_{}", status.as_u16()),
                format!("{path}: {}", String::from_utf8_lossy(&bytes).trim()),
            ));
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Failure::new("BadResponse", format!("{path}: {e}")))?;
        let inst = &v["application"]["instance"];
        let list = match inst {
            Value::Array(a) => a.iter().collect(),
            Value::Object(_) => vec![inst],
            _ => Vec::new(),
        };
        Ok(list
            .into_iter()
            .filter_map(|i| {
                let p = &i["port"]["$"];
                p.as_u64()
                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
                    .and_then(|p| u16::try_from(p).ok())
            })
            .collect())
    }
}
