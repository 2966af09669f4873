# One role per function, each naming only the actions its code calls, on the
# resources it needs. IAM is global, so role names carry the region: the same
# name_prefix can be applied in several regions of one account.

locals {
  arn_prefix = {
    elasticache    = "arn:${local.partition}:elasticache:${local.region}:${local.account}"
    cloudwatch     = "arn:${local.partition}:cloudwatch:${local.region}:${local.account}"
    logs           = "arn:${local.partition}:logs:${local.region}:${local.account}"
    secretsmanager = "arn:${local.partition}:secretsmanager:${local.region}:${local.account}"
  }

  table_arns = [aws_dynamodb_table.broker.arn, "${aws_dynamodb_table.broker.arn}/index/gsi1"]

  # Secrets the broker makes per instance and binding:
  # <prefix>/instances/<id>/admin, <prefix>/instances/<id>/bindings/<id> and
  # <prefix>/instances/<id>/spares/<user>
  # (Secrets Manager appends -XXXXXX to the name in the ARN).
  instance_secrets_arn = "${local.arn_prefix.secretsmanager}:secret:${var.name_prefix}/instances/*"

  # The binding passwords alone (a binding's own, or the spare user it
  # claimed): an id holds no "/", so neither matches an instance's admin
  # secret <prefix>/instances/<id>/admin.
  binding_secrets_arns = [
    "${local.arn_prefix.secretsmanager}:secret:${var.name_prefix}/instances/*/bindings/*",
    "${local.arn_prefix.secretsmanager}:secret:${var.name_prefix}/instances/*/spares/*",
  ]

  # Every ElastiCache id the broker makes starts with "<prefix>-"
  # (shared/aws/src/elasticache/names.rs).
  ec = local.arn_prefix.elasticache
  owned_caches = [
    "${local.ec}:replicationgroup:${var.name_prefix}-*",
    "${local.ec}:cluster:${var.name_prefix}-*",
  ]
  owned_users = [
    "${local.ec}:user:${var.name_prefix}-*",
    "${local.ec}:usergroup:${var.name_prefix}-*",
  ]
  owned_snapshots = ["${local.ec}:snapshot:${var.name_prefix}-*"]
  # Serverless caches are named as replication groups are (<prefix>-<hash>),
  # and so are their snapshots (<prefix>-s-..., <prefix>-final-..., and the
  # orphan sweep's <prefix>-<hash>-orphan).
  owned_serverless           = ["${local.ec}:serverlesscache:${var.name_prefix}-*"]
  owned_serverless_snapshots = ["${local.ec}:serverlesscachesnapshot:${var.name_prefix}-*"]
  # The caches' alarms are named after their cache: <prefix>-<hash>/<node>/<metric>
  # (shared/aws/src/cloudwatch.rs).
  owned_alarms = "${local.arn_prefix.cloudwatch}:alarm:${var.name_prefix}-*"
  # What a create or modify names besides the cache itself.
  cache_dependencies = [
    "${local.ec}:subnetgroup:${var.cache_subnet_group}",
    "${local.ec}:subnetgroup:${local.memcached_subnet_group}",
    # ElastiCache's default parameter groups (default.redis7.cluster.on ...),
    # and an instance's own (<prefix>-<hash>-<family>).
    "${local.ec}:parametergroup:default.*",
    "${local.ec}:parametergroup:${var.name_prefix}-*",
  ]

  # What CreateVpcEndpoint names besides the endpoint of a serverless cache:
  # its VPC, the subnets it is put in (CACHE_SUBNET_IDS) and the caches'
  # security groups (CACHE_SECURITY_GROUP_IDS), which the provisioner passes
  # to CreateServerlessCache. Any account: a shared VPC's subnets belong to
  # its owner.
  ec2_arn_prefix = "arn:${local.partition}:ec2:${local.region}"
  serverless_endpoint_network = concat(
    ["${local.ec2_arn_prefix}:*:vpc/*"],
    [for s in var.cache_subnet_ids : "${local.ec2_arn_prefix}:*:subnet/${s}"],
    [for g in var.cache_security_group_ids : "${local.ec2_arn_prefix}:*:security-group/${g}"],
  )
  serverless_endpoints = "${local.ec2_arn_prefix}:${local.account}:vpc-endpoint/*"

  tracing_statement = {
    Sid      = "XRayTraces"
    Effect   = "Allow"
    Action   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    Resource = "*" # X-Ray has no resource-level permissions.
  }

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "lambda.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })

  broker_api_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "Logs"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = "${aws_cloudwatch_log_group.broker_api.arn}:log-stream:*"
      },
      local.tracing_statement,
      {
        # Reads (a binding and its instance in one BatchGetItem), conditional
        # puts (alone and in TransactWriteItems) and index queries.
        Sid      = "Table"
        Effect   = "Allow"
        Action   = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:Query"]
        Resource = local.table_arns
      },
      {
        Sid      = "EnqueueJobs"
        Effect   = "Allow"
        Action   = ["sqs:SendMessage"]
        Resource = aws_sqs_queue.jobs.arn
      },
      {
        Sid      = "BrokerCredentials"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = aws_secretsmanager_secret.broker_credentials.arn
      },
      {
        # A binding's password, returned by bind and by fetch binding; the
        # describe tells a secret scheduled for deletion from a broken one.
        # Never an admin password or AUTH token.
        Sid      = "ReadBindingSecrets"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
        Resource = local.binding_secrets_arns
      },
      {
        # The cache's endpoint, returned with a binding's credentials. Reads
        # only: broker-api never changes a cache.
        Sid      = "CacheEndpoints"
        Effect   = "Allow"
        Action   = ["elasticache:DescribeReplicationGroups", "elasticache:DescribeCacheClusters"]
        Resource = local.owned_caches
      },
      {
        # Fetching an instance lists its snapshots, and a provision that
        # restores from one, or an update that takes or deletes one, checks
        # the name first. A listing call: IAM takes it on "*"; the broker
        # keeps only its own names. A serverless cache's snapshots are listed
        # apart, and its endpoint (a fetch binding's) comes from
        # DescribeServerlessCaches: reads only, taken on "*" as the
        # provisioner's sweep takes the same calls.
        Sid    = "SnapshotListings"
        Effect = "Allow"
        Action = [
          "elasticache:DescribeSnapshots",
          "elasticache:DescribeServerlessCaches",
          "elasticache:DescribeServerlessCacheSnapshots",
        ]
        Resource = "*"
      },
      {
        # Fetching an instance shows its alarms' states. Metric alarms only:
        # DescribeAlarms scoped to the prefix returns no composite alarms.
        Sid      = "CacheAlarmStates"
        Effect   = "Allow"
        Action   = ["cloudwatch:DescribeAlarms"]
        Resource = local.owned_alarms
      },
      {
        # The dashboard page charts the caches' CPU, memory and connections.
        # GetMetricData has no resource type and no condition key: IAM
        # allows it on "*" or not at all. It reads metrics only.
        Sid      = "CacheMetricCharts"
        Effect   = "Allow"
        Action   = ["cloudwatch:GetMetricData"]
        Resource = "*"
      },
    ]
  }

  provisioner_policy = {
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Sid      = "Logs"
          Effect   = "Allow"
          Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
          Resource = "${aws_cloudwatch_log_group.provisioner.arn}:log-stream:*"
        },
        local.tracing_statement,
        {
          Sid      = "Table"
          Effect   = "Allow"
          Action   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"]
          Resource = local.table_arns
        },
        {
          # ReceiveMessage, DeleteMessage and GetQueueAttributes are what the
          # event source mapping needs; SendMessage re-enqueues a job while
          # AWS is busy.
          Sid      = "Jobs"
          Effect   = "Allow"
          Action   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:SendMessage"]
          Resource = aws_sqs_queue.jobs.arn
        },
        {
          # Admin and binding passwords: created by name, read at a stage,
          # rotated (put, stage move; RotateSecret puts them on a schedule
          # or rotates one now), deleted with a recovery window and restored
          # when a deleted name is created again.
          Sid    = "InstanceSecrets"
          Effect = "Allow"
          Action = [
            "secretsmanager:CreateSecret",
            "secretsmanager:DescribeSecret",
            "secretsmanager:GetSecretValue",
            "secretsmanager:PutSecretValue",
            "secretsmanager:UpdateSecretVersionStage",
            "secretsmanager:DeleteSecret",
            "secretsmanager:RestoreSecret",
            "secretsmanager:RotateSecret",
            # CreateSecret with the broker tag the orphan sweep checks.
            "secretsmanager:TagResource",
          ]
          Resource = local.instance_secrets_arn
        },
        {
          # The reconciler's orphan sweep lists the account's caches, users,
          # user groups and secrets a page at a time (listing calls name no
          # resource, so IAM takes them on "*"); it keeps only those under
          # the prefix, and deletes only through the prefix-scoped
          # statements, after checking the broker tag. The provider's lookups
          # of its own caches by id use the same Describe calls.
          Sid    = "OrphanSweepListings"
          Effect = "Allow"
          Action = [
            "elasticache:DescribeReplicationGroups",
            "elasticache:DescribeCacheClusters",
            "elasticache:DescribeUsers",
            "elasticache:DescribeUserGroups",
            # A cache's snapshots (fetch, restore, the snapshot actions) and
            # its events (a cluster-mode failover test ends when they say so).
            "elasticache:DescribeSnapshots",
            "elasticache:DescribeEvents",
            # A deleted cache's own parameter groups are found in the
            # account's listing.
            "elasticache:DescribeCacheParameterGroups",
            # A maintenance upgrade lists the cache's pending service updates.
            "elasticache:DescribeUpdateActions",
            # The sweep lists the account's serverless caches as it lists
            # replication groups, and a serverless cache's snapshots are
            # listed apart from a replication group's (fetch, restore, the
            # snapshot actions, deprovision).
            "elasticache:DescribeServerlessCaches",
            "elasticache:DescribeServerlessCacheSnapshots",
            "secretsmanager:ListSecrets",
          ]
          Resource = "*"
        },
        {
          # RotateSecret requires the caller to be allowed to invoke the
          # rotation function it names: the provisioner itself.
          Sid      = "RotationFunction"
          Effect   = "Allow"
          Action   = ["lambda:InvokeFunction"]
          Resource = local.provisioner_arn
        },
        {
          # Whose a cache is (its broker-instance-id tag), before adopting or
          # deleting one found under an instance's name. The Describe calls
          # are in OrphanSweepListings, on "*".
          Sid      = "DescribeOwnCaches"
          Effect   = "Allow"
          Action   = ["elasticache:ListTagsForResource"]
          Resource = concat(local.owned_caches, local.owned_serverless, local.owned_users)
        },
        {
          # Creates and modifies name the cache and everything it uses; tags
          # given at creation need AddTagsToResource as well.
          Sid    = "ManageOwnCaches"
          Effect = "Allow"
          Action = [
            "elasticache:CreateReplicationGroup",
            "elasticache:CreateCacheCluster",
            "elasticache:ModifyReplicationGroup",
            "elasticache:ModifyCacheCluster",
            "elasticache:ModifyReplicationGroupShardConfiguration",
            "elasticache:IncreaseReplicaCount",
            "elasticache:DecreaseReplicaCount",
            # Serverless caches: CreateServerlessCache names the cache's user
            # group and, for a restore, the snapshot (node-based or
            # serverless, which CreateReplicationGroup may name too).
            "elasticache:CreateServerlessCache",
            "elasticache:ModifyServerlessCache",
            # The day-2 actions: restart and failover test; a restore names
            # one of the broker's snapshots in CreateReplicationGroup.
            "elasticache:RebootCacheCluster",
            "elasticache:TestFailover",
            # An instance's own parameter group (its eviction policy),
            # <prefix>-<hash>-<family>.
            "elasticache:CreateCacheParameterGroup",
            "elasticache:ModifyCacheParameterGroup",
            "elasticache:DeleteCacheParameterGroup",
            # A maintenance upgrade applies the cache's service updates.
            "elasticache:BatchApplyUpdateAction",
            "elasticache:AddTagsToResource",
          ]
          Resource = concat(
            local.owned_caches, local.owned_serverless, local.owned_users,
            local.owned_snapshots, local.owned_serverless_snapshots, local.cache_dependencies,
          )
        },
        {
          # DeleteReplicationGroup and DeleteServerlessCache name the final
          # snapshot they take (<prefix>-final-<hash>-<hash>) when the plan
          # asks for one.
          Sid    = "DeleteOwnCaches"
          Effect = "Allow"
          Action = [
            "elasticache:DeleteReplicationGroup",
            "elasticache:DeleteCacheCluster",
            "elasticache:DeleteServerlessCache",
            # The snapshot parameter's snapshots (<prefix>-s-<hash>-<name>),
            # by delete_snapshot and with their instance.
            "elasticache:DeleteSnapshot",
            "elasticache:DeleteServerlessCacheSnapshot",
          ]
          Resource = concat(local.owned_caches, local.owned_serverless, local.owned_snapshots, local.owned_serverless_snapshots)
        },
        {
          # The ElastiCache API reference, DeleteReplicationGroup: "CreateSnapshot
          # permission is required to create a final snapshot. Without this
          # permission, the API call will fail with an Access Denied exception."
          # The snapshot parameter's snapshots are taken with it too.
          # DeleteServerlessCache likewise: "CreateServerlessCacheSnapshot
          # permission is required to create a final snapshot. Without this
          # permission, the API call will fail with an Access Denied
          # exception."
          Sid    = "FinalSnapshots"
          Effect = "Allow"
          Action = ["elasticache:CreateSnapshot", "elasticache:CreateServerlessCacheSnapshot"]
          Resource = concat(
            ["${local.ec}:replicationgroup:${var.name_prefix}-*"], local.owned_snapshots,
            local.owned_serverless, local.owned_serverless_snapshots,
          )
        },
        {
          # RBAC: the disabled default user, the admin user and one user per
          # binding, in one user group per replication group.
          Sid    = "ManageOwnUsers"
          Effect = "Allow"
          Action = [
            "elasticache:CreateUser",
            "elasticache:ModifyUser",
            "elasticache:DeleteUser",
            "elasticache:CreateUserGroup",
            "elasticache:ModifyUserGroup",
            "elasticache:DeleteUserGroup",
            "elasticache:AddTagsToResource",
          ]
          Resource = local.owned_users
        },
        {
          # Each cache's alarms: described by name prefix, put (tags at
          # creation need TagResource), deleted with the cache; the orphan
          # sweep reads an alarm's tags before deleting it.
          Sid    = "CacheAlarms"
          Effect = "Allow"
          Action = [
            "cloudwatch:DescribeAlarms",
            "cloudwatch:PutMetricAlarm",
            "cloudwatch:DeleteAlarms",
            "cloudwatch:TagResource",
            "cloudwatch:ListTagsForResource",
          ]
          Resource = local.owned_alarms
        },
        {
          # Log delivery: each cache's log group /elasticache/<prefix>-<hash>,
          # created with the cache's tags (TagResource) and retention,
          # deleted after the cache; the sweep reads a group's tags.
          Sid    = "CacheLogGroups"
          Effect = "Allow"
          Action = [
            "logs:CreateLogGroup",
            "logs:PutRetentionPolicy",
            "logs:DeleteLogGroup",
            "logs:TagResource",
            "logs:ListTagsForResource",
          ]
          Resource = "${local.arn_prefix.logs}:log-group:/elasticache/${var.name_prefix}-*"
        },
        {
          # What ElastiCache's log delivery asks of the caller that turns it
          # on (ElastiCache User Guide, "ElastiCache logging destinations"):
          # the vended-log delivery and the log groups' resource policy,
          # which name no resource of ours. The sweep lists log groups by
          # prefix with DescribeLogGroups.
          Sid    = "CacheLogDelivery"
          Effect = "Allow"
          Action = [
            "logs:CreateLogDelivery",
            "logs:GetLogDelivery",
            "logs:UpdateLogDelivery",
            "logs:DeleteLogDelivery",
            "logs:ListLogDeliveries",
            "logs:PutResourcePolicy",
            "logs:DescribeResourcePolicies",
            "logs:DescribeLogGroups",
          ]
          Resource = "*"
        },
        {
          # The first cache of an account creates ElastiCache's
          # service-linked role, which manages the caches' network interfaces.
          Sid      = "ElastiCacheServiceLinkedRole"
          Effect   = "Allow"
          Action   = ["iam:CreateServiceLinkedRole"]
          Resource = "arn:${local.partition}:iam::${local.account}:role/aws-service-role/elasticache.amazonaws.com/AWSServiceRoleForElastiCache"
          Condition = {
            StringLike = { "iam:AWSServiceName" = "elasticache.amazonaws.com" }
          }
        },
      ],
      # A serverless cache is reached through a VPC endpoint that ElastiCache
      # creates in cache_subnet_ids with the permissions of the caller of
      # CreateServerlessCache. These are the statements AmazonElastiCacheFullAccess
      # grants for it (ElastiCache User Guide, "AWS managed policies for Amazon
      # ElastiCache"), scoped to this region, the given subnets and the
      # caches' security groups; none without cache_subnet_ids, since no
      # serverless cache is made then.
      [for statement in [
        {
          # The endpoint itself: only one of ElastiCache Serverless's
          # endpoint services.
          Sid       = "ServerlessVpcEndpoints"
          Effect    = "Allow"
          Action    = ["ec2:CreateVpcEndpoint"]
          Resource  = local.serverless_endpoints
          Condition = { StringLike = { "ec2:VpceServiceName" = "com.amazonaws.elasticache.serverless.*" } }
        },
        {
          # What the endpoint names: the managed policy's NotResource
          # vpc-endpoint/*, narrowed to the VPC, subnets and security groups.
          Sid      = "ServerlessVpcEndpointNetwork"
          Effect   = "Allow"
          Action   = ["ec2:CreateVpcEndpoint"]
          Resource = local.serverless_endpoint_network
        },
        {
          # ElastiCache tags the endpoint AmazonElastiCacheManaged=true as it
          # creates it: tags only in that CreateVpcEndpoint, and only in a
          # request carrying that tag; none afterwards.
          Sid      = "ServerlessVpcEndpointTags"
          Effect   = "Allow"
          Action   = ["ec2:CreateTags"]
          Resource = local.serverless_endpoints
          Condition = {
            StringEquals = {
              "ec2:CreateAction"                        = "CreateVpcEndpoint"
              "aws:RequestTag/AmazonElastiCacheManaged" = "true"
            }
          }
        },
        {
          # The checks of the subnets and security groups a create names.
          # EC2's Describe calls have no resource type: IAM allows them on
          # "*" or not at all.
          Sid      = "ServerlessNetworkLookups"
          Effect   = "Allow"
          Action   = ["ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"]
          Resource = "*"
        },
      ] : statement if length(var.cache_subnet_ids) > 0],
      # Encryption at rest with the operator's key: ElastiCache uses it through
      # a grant made on the provisioner's behalf.
      [for statement in [
        {
          Sid       = "CacheEncryptionKeyDescribe"
          Effect    = "Allow"
          Action    = ["kms:DescribeKey"]
          Resource  = var.kms_key_arn
          Condition = { StringEquals = { "kms:ViaService" = local.kms_via_services } }
        },
        {
          Sid      = "CacheEncryptionKeyGrant"
          Effect   = "Allow"
          Action   = ["kms:CreateGrant"]
          Resource = var.kms_key_arn
          Condition = {
            StringEquals = { "kms:ViaService" = local.kms_via_services }
            Bool         = { "kms:GrantIsForAWSResource" = "true" }
          }
        },
      ] : statement if var.kms_key_arn != null],
    )
  }
}

resource "aws_iam_role" "broker_api" {
  name                 = "${local.api_name}-${local.region}"
  description          = "broker-api of the ${var.name_prefix} ElastiCache service broker in ${local.region}"
  assume_role_policy   = local.assume_role_policy
  permissions_boundary = var.permissions_boundary_arn
}

resource "aws_iam_role_policy" "broker_api" {
  name   = "broker-api"
  role   = aws_iam_role.broker_api.id
  policy = jsonencode(local.broker_api_policy)
}

resource "aws_iam_role" "provisioner" {
  name                 = "${local.provisioner_name}-${local.region}"
  description          = "provisioner of the ${var.name_prefix} ElastiCache service broker in ${local.region}"
  assume_role_policy   = local.assume_role_policy
  permissions_boundary = var.permissions_boundary_arn
}

resource "aws_iam_role_policy" "provisioner" {
  name   = "provisioner"
  role   = aws_iam_role.provisioner.id
  policy = jsonencode(local.provisioner_policy)
}
