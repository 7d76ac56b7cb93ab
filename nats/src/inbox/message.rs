//! A consumed message kept whole in a dead letter (subject, stream sequence, headers,
//! payload), so a retry works after the bus has dropped it. A small length-prefixed binary
//! form: the payload stays bytes, whatever its encoding.

use async_nats::HeaderMap;

use crate::{headers, Error, Result};

/// Format tag, first byte: a later layout gets a new tag.
const V1: u8 = 1;

/// One message as the consumer received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredMessage {
    pub(crate) subject: String,
    pub(crate) sequence: u64,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) payload: Vec<u8>,
}

impl StoredMessage {
    pub(crate) fn new(
        subject: &str,
        sequence: u64,
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> Self {
        let headers = headers
            .map(|h| {
                h.iter()
                    .flat_map(|(name, values)| {
                        values
                            .iter()
                            .map(move |v| (name.to_string(), v.as_str().to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            subject: subject.to_owned(),
            sequence,
            headers,
            payload: payload.to_vec(),
        }
    }

    pub(crate) fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            map.append(name.as_str(), value.as_str());
        }
        map
    }

    /// The annals event it carries.
    pub(crate) fn decode(&self) -> Result<headers::BusEvent> {
        headers::from_message(
            &self.subject,
            self.sequence,
            Some(&self.header_map()),
            &self.payload,
        )
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 256);
        out.push(V1);
        put(&mut out, self.subject.as_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&(self.headers.len() as u32).to_be_bytes());
        for (name, value) in &self.headers {
            put(&mut out, name.as_bytes());
            put(&mut out, value.as_bytes());
        }
        put(&mut out, &self.payload);
        out
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let corrupt = || Error::Config("a dead letter's stored message is corrupt".to_owned());
        let mut r = Reader(bytes);
        if r.take(1).ok_or_else(corrupt)? != [V1] {
            return Err(corrupt());
        }
        let subject = r.string().ok_or_else(corrupt)?;
        let sequence = r.u64().ok_or_else(corrupt)?;
        let count = r.u32().ok_or_else(corrupt)?;
        let mut headers = Vec::new();
        for _ in 0..count {
            headers.push((
                r.string().ok_or_else(corrupt)?,
                r.string().ok_or_else(corrupt)?,
            ));
        }
        let payload = r.bytes().ok_or_else(corrupt)?.to_vec();
        if !r.0.is_empty() {
            return Err(corrupt());
        }
        Ok(Self {
            subject,
            sequence,
            headers,
            payload,
        })
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::StoredMessage;

    #[test]
    fn round_trips_and_refuses_corruption() {
        let message = StoredMessage {
            subject: "annals.account.account-1".into(),
            sequence: 42,
            headers: vec![
                ("ce-id".into(), "x".into()),
                ("annals-actor".into(), "ada\u{e9}".into()),
            ],
            payload: vec![0, 255, 1],
        };
        let bytes = message.to_bytes();
        assert_eq!(StoredMessage::from_bytes(&bytes).unwrap(), message);
        for cut in 0..bytes.len() {
            assert!(
                StoredMessage::from_bytes(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(StoredMessage::from_bytes(&longer).is_err());
    }
}
