module github.com/buildslave/buildslave

go 1.26.0

require (
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6
	github.com/emersion/go-smtp v0.25.1
	github.com/gorilla/websocket v1.5.3
	github.com/jordan-wright/email v4.0.1-0.20210109023952-943e75fe5223+incompatible
)
