//! What a platform user may read: operation descriptions and error bodies
//! say what failed in AWS terms (the call, the error code, the broker's own
//! resource names) but not the operator's AWS account id or where laptop
//! mode keeps its files. The full text stays in the broker's log.

/// `text` with every AWS account id in an ARN or an SQS queue URL replaced
/// by `<account>`, and every absolute file path by its last component.
pub fn for_platform(text: &str) -> String {
    let redacted = without_account_ids(text);
    redacted.split(' ').map(without_directories).collect::<Vec<_>>().join(" ")
}

/// Twelve digits between two of `:` and `/` (ARNs: `…:eu-west-1:123456789012:secret:…`,
/// queue URLs: `…amazonaws.com/123456789012/osb-jobs`) are an account id.
fn without_account_ids(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let bounded = |at: usize| matches!(bytes.get(at), Some(b':' | b'/'));
        if i > 0
            && bounded(i - 1)
            && bytes.len() >= i + 12
            && bytes[i..i + 12].iter().all(u8::is_ascii_digit)
            && bounded(i + 12)
        {
            out.push_str("<account>");
            i += 12;
        } else {
            // Whole characters only: copy up to the next byte that could
            // start an account id.
            let next =
                bytes[i + 1..].iter().position(|b| b.is_ascii_digit()).map_or(bytes.len(), |n| i + 1 + n);
            out.push_str(&text[i..next]);
            i = next;
        }
    }
    out
}

/// A word that is an absolute path (`/home/me/.broker-state/caches/i-1/server.log`,
/// maybe in parentheses or quotes, maybe followed by `:` or `,`) becomes its
/// file name; other words stay as they are. URLs are not paths.
fn without_directories(word: &str) -> String {
    let start = word.find('/').filter(|&n| word[..n].chars().all(|c| matches!(c, '(' | '"' | '\'' | '`')));
    let Some(start) = start else { return word.to_string() };
    let end = word
        .rfind(|c: char| !matches!(c, ')' | '"' | '\'' | '`' | ':' | ',' | ';' | '.'))
        .map_or(word.len(), |n| n + 1);
    let path = &word[start..end.max(start)];
    if path.matches('/').count() < 2 {
        return word.to_string();
    }
    let name = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
    format!("{}{name}{}", &word[..start], &word[end.max(start)..])
}

#[cfg(test)]
mod tests {
    use super::for_platform;

    #[test]
    fn account_ids_in_arns_and_queue_urls_are_left_out() {
        assert_eq!(
            for_platform(
                "GetSecretValue arn:aws:secretsmanager:eu-west-1:123456789012:secret:osb/instances/i-1/admin-AbCdEf failed: AccessDeniedException"
            ),
            "GetSecretValue arn:aws:secretsmanager:eu-west-1:<account>:secret:osb/instances/i-1/admin-AbCdEf failed: AccessDeniedException"
        );
        assert_eq!(
            for_platform(
                "SQS SendMessage to https://sqs.eu-west-1.amazonaws.com/123456789012/osb-jobs failed"
            ),
            "SQS SendMessage to https://sqs.eu-west-1.amazonaws.com/<account>/osb-jobs failed"
        );
    }

    #[test]
    fn laptop_paths_become_file_names() {
        assert_eq!(
            for_platform("redis-server exited; see /home/me/app/.broker-state/caches/i-1/server.log:"),
            "redis-server exited; see server.log:"
        );
        assert_eq!(
            for_platform("could not start (/usr/bin/valkey-server)"),
            "could not start (valkey-server)"
        );
    }

    #[test]
    fn what_the_broker_says_of_its_own_resources_stays_as_it_is() {
        for text in [
            "provision: waiting for the cache (creating replication group osb-0123456789abcdef: 2 of 3 nodes available)",
            "the previous password works until 2026-12-02T01:02:03.0Z",
            "ModifyUser osb-u-1234567890123456 failed: InvalidParameterValue: 2 passwords given, 1 expected",
            "unit 1/2 done",
            "été: 123456789012 bytes",
        ] {
            assert_eq!(for_platform(text), text);
        }
    }
}
